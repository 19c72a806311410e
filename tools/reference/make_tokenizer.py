"""Writes the CLIP BPE tokenizer files (vocab.json, merges.txt) from the BPE merge list that the
open-clip-torch package ships, building the vocabulary the way OpenAI CLIP does: the 256 byte
symbols, the same with an end-of-word mark, one entry per merge, then the two special tokens.
The result is the standard 49408-entry CLIP vocabulary; the check at the end tokenizes sample
captions with transformers' CLIPTokenizer over these files and with open_clip's own tokenizer and
requires equal ids."""
import argparse
import gzip
import json
import os

import open_clip


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    src = os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")
    lines = gzip.open(src).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408, len(vocab)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False, separators=(",", ":"))
    with open(os.path.join(args.out, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")

    from transformers import CLIPTokenizer

    tok = CLIPTokenizer(os.path.join(args.out, "vocab.json"), os.path.join(args.out, "merges.txt"))
    oc = open_clip.get_tokenizer("ViT-B-32")
    for text in ["a man with a red hat", "Naruto Uzumaki, smiling!! 123 ninjas", "ÉCOLE façade — 東京"]:
        a = tok(text, max_length=77, padding="max_length", truncation=True)["input_ids"]
        b = oc([text])[0].tolist()
        n = a.index(49407) + 1
        assert a[:n] == b[:n], (text, a[:n], b[:n])
    print(f"wrote {args.out}: {len(vocab)} tokens, {len(merges)} merges; matches open_clip")


if __name__ == "__main__":
    main()
