"""Writes the CLIP tokenizer fixtures: tests/fixtures/tokenizer/captions.txt (one caption per
line, split on "\\n" only: a caption may hold \\r, U+2028 and other line breaks Python's
splitlines() would cut at) and expected.jsonl (per caption, the input_ids and attention_mask of
transformers' CLIPTokenizer called as the Kandinsky prior script calls it: max_length=77,
padding="max_length", truncation=True; one JSON object per line in `k22 tokenize`'s format).
expected_pad_bang.jsonl is the same for the first 400 captions with the tokenizer folder's
special_tokens_map.json setting pad_token "!" (what the open_clip-derived bigG tokenizers do).

Run: tools/reference/.venv/bin/python tools/reference/make_tokenizer_fixtures.py
"""
import json
import os
import random
import shutil
import tempfile

from transformers import CLIPTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VOCAB = os.path.join(ROOT, "data", "clip-tokenizer")
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizer")

HARD = [
    "", " ", "\t", "a", "A", "a photo of a cat", "A PHOTO OF A CAT",
    "café", "cafe\u0301", "Cafe\u0301 Noir", "e\u0301\u0323", "e\u0323\u0301", "\u1e0b\u0323",
    "q\u0307\u0323", "Ångström", "A\u030angstro\u0308m", "naïve résumé", "Ωhm \u2126hm", "\u212b",
    "한국어 텍스트", "\u1100\u1161\u11a8", "\u1112\u1161\u11ab\u1100\u116e\u11a8", "日本語のキャプション",
    "中文字幕，测试。", "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３", "ｶﾀｶﾅ", "\u3000ideographic\u3000space",
    "😀", "👍🏽 thumbs", "👨‍👩‍👧‍👦 family", "🏳️‍🌈 flag", "❤️🔥", "🇯🇵🇺🇸", "👩🏿‍🚀 astronaut",
    "Tom &amp; Jerry", "it&#39;s fine", "&lt;b&gt;bold&lt;/b&gt;", "&quot;quoted&quot;", "&nbsp;x",
    "a   b\t\tc", "  leading and trailing  ", "tab\there", "x\r y\r", "carriage\rreturn",
    "line\u2028sep", "para\u2029sep", "nbsp\u00a0here", "nel\u0085here", "vt\x0bff\x0c",
    "fs\x1cgs\x1drs\x1eus\x1f", "\u200bzero\u200cwidth\u200djoin\ufeffbom", "soft\u00adhyphen",
    "wow!!!", "what?!?", "...", "--- *** ###", "(a) [b] {c} <d>", "«quotes» „German“ 'single'",
    "12345", "3.14159", "1,000,000", "2023-01-01", "v1.2.3", "0x1F", "١٢٣ ٤٥٦", "Ⅻ ½ ² ①",
    "it's", "IT'S", "they're", "THEY'RE", "we've", "I'm", "I'M", "you'll", "YOU'LL", "he'd",
    "don't", "DON'T", "'s", "''s", "!'s", "'sa", "rock'n'roll", "o'clock", "’s curly",
    "Привет, мир! ЁЖИК", "مرحبا بالعالم", "नमस्ते दुनिया", "สวัสดีชาวโลก", "Γειά σου Κόσμε ΟΔΟΣ",
    "שלום עולם", "İstanbul IŞIK ı", "ß ẞ straße", "ǅ ǈ ǋ", "Ⓐⓑ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝐁𝐨𝐥𝐝",
    "∀x∈ℝ: x²≥0", "∑_{i=1}^n i = n(n+1)/2", "E=mc²", "α+β=γ", "√2 ≈ 1.414", "∞ ≠ ∅",
    "<|startoftext|>", "<|endoftext|>", "a <|endoftext|> b", "x<|startoftext|>y<|endoftext|>z",
    "<|EndOfText|>", "<|endoftext", "<<|endoftext|>>", "!<|endoftext|>", "<|startoftext|><|endoftext|>",
    "\ufffd replacement", "\x00nul\x00", "\x01\x02\x07", "\U0001F600\U0001F601" * 3,
    "naruto uzumaki with orange hair", "a drawing of a man with a sword",
    "a cartoon character with a sad look on his face",
    "a picture of a ninja with a mask and a headband", "sasuke uchiha in a black shirt",
    "a close up of a person with red eyes and black hair", "a drawing of a woman with long pink hair",
    "Ｎａｒｕｔｏ ナルト 鳴門", "kakashi hatake, sharingan!! (anime style)",
    "Ǆ dž ǆ", "\u0344\u0345", "\u0f73\u0f75", "\u0958\u0959", "\u2adc", "\U0001d15e",
    "a\u0308\u0301", "o\u031b\u0301", "u\u0308\u0304", "\u0627\u0653", "\u09c7\u09be",
    "\u0b47\u0b3e", "\u0bc6\u0bbe", "\u1025\u102e", "\u1b05\u1b35", "\u0915\u093c",
]

WORDS = ("a an the of with in on at by for and or photo picture drawing painting portrait anime "
         "cartoon character man woman boy girl cat dog bird tree house car sky sea mountain city "
         "red blue green yellow orange black white pink purple golden silver dark bright small big "
         "old young happy sad smiling standing sitting holding wearing looking naruto sasuke sakura "
         "kakashi hinata itachi gaara ninja headband sword mask hair eyes face hat shirt jacket "
         "background forest night sunset rain snow fire water light shadow style detailed "
         "beautiful cute scary hokage village konoha uchiha uzumaki hyuga").split()
EXTRA = ["café", "naïve", "über", "jalapeño", "smörgåsbord", "façade", "crème brûlée", "São Paulo",
         "Москва", "кот", "東京", "猫", "ラーメン", "서울", "القاهرة", "मुंबई", "กรุงเทพ", "Αθήνα",
         "😀", "🔥", "👍🏻", "👩‍💻", "🐱", "✨", "🎉", "&amp;", "&#39;", "&quot;", "&lt;", "&gt;",
         "42", "2024", "3.5", "100%", "#1", "@user", "e-mail", "x2", "4k", "8-bit", "$9.99",
         "it's", "DON'T", "we're", "I'VE", "she'll", "he'd", "I'm", "'", "''", "\"", "!!", "?!",
         "...", "—", "–", "·", "•", "°", "±", "×", "÷", "→", "⇒", "≤", "≥", "∂", "∫", "π",
         "e\u0301", "a\u0300", "o\u0302", "n\u0303", "u\u0308", "c\u0327", "\u200b", "\u200d",
         "\u00a0", "\t", "  ", "\u3000", "\r"]


def make_captions():
    rng = random.Random(22)
    caps = list(HARD)
    # captions longer than 77 tokens
    caps.append(" ".join(rng.choice(WORDS) for _ in range(120)))
    caps.append("supercalifragilisticexpialidocious " * 30)
    caps.append("😀" * 100)
    caps.append("1" * 200)
    caps.append("!" * 300)
    caps.append("a" * 500)
    caps.append("<|endoftext|>" * 90)
    caps.append(" ".join(["naïve café"] * 60))
    while len(caps) < 2400:
        n = rng.choice([1, 2, 3, 5, 8, 12, 20, 30, 60, 90])
        parts = []
        for _ in range(n):
            r = rng.random()
            w = rng.choice(EXTRA) if r < 0.25 else rng.choice(WORDS)
            if rng.random() < 0.1:
                w = w.capitalize() if rng.random() < 0.5 else w.upper()
            parts.append(w)
        sep = rng.choice([" ", " ", " ", ", ", "  ", "\t", "", " - "])
        caps.append(sep.join(parts))
    for c in caps:
        assert "\n" not in c
    return caps


def encode(tok, caps):
    r = tok(caps, max_length=77, padding="max_length", truncation=True)
    return [json.dumps({"input_ids": i, "attention_mask": m})
            for i, m in zip(r["input_ids"], r["attention_mask"])]


def main():
    caps = make_captions()
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "captions.txt"), "w", encoding="utf-8", newline="") as f:
        f.write("".join(c + "\n" for c in caps))
    tok = CLIPTokenizer.from_pretrained(VOCAB)
    lines = encode(tok, caps)
    with open(os.path.join(OUT, "expected.jsonl"), "w", encoding="utf-8", newline="") as f:
        f.write("".join(line + "\n" for line in lines))
    with tempfile.TemporaryDirectory() as d:
        for name in ("vocab.json", "merges.txt"):
            shutil.copy(os.path.join(VOCAB, name), d)
        with open(os.path.join(d, "special_tokens_map.json"), "w") as f:
            json.dump({"pad_token": "!"}, f)
        bang = CLIPTokenizer.from_pretrained(d)
        assert bang.pad_token_id == 0
        lines = encode(bang, caps[:400])
    with open(os.path.join(OUT, "expected_pad_bang.jsonl"), "w", encoding="utf-8", newline="") as f:
        f.write("".join(line + "\n" for line in lines))
    print("wrote %d captions" % len(caps))


if __name__ == "__main__":
    main()
