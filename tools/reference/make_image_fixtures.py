"""make_image_fixtures.py: small test images in every format and mode k22 decodes, broken files,
and what the pinned reference makes of them.

Writes tests/fixtures/images/:
  ok/<name>.<ext>       images (JPEG, PNG incl. 16-bit/interlaced/palette/tRNS, WebP incl. alpha,
                        animated, EXIF) synthesized deterministically (gradients, noise, shapes)
  bad/<name>            truncated, wrong magic, empty, huge declared size, bad EXIF offsets
  expected.safetensors  <name>.rgb    U8 (H, W, 3)  PIL Image.open(f).convert("RGB")
                        <name>.clip   U8 (224, 224, 3) CLIPImageProcessor before rescale/normalize (some images)
                        <name>.dec64  U8 (64, 64, 3) decoder transform before /127.5 - 1
                        <name>.dec96  U8 (96, 96, 3) (the images with .clip)
                        clip_f32.<name> F32 (3, 8, 224)  pixel_values rows 0..7 (normalization)
                        dec_f32.<name>  F32 (3, 8, 64)   decoder transform rows 0..7 at 64
  resample.safetensors  random resizes by PIL (three reducing_gap settings) and torchvision
The U8 forms are checked here to give the float outputs exactly, so C can compare integers.
Run: tools/reference/.venv/bin/python tools/reference/make_image_fixtures.py
"""

import io
import os
import struct
import zlib

import numpy as np
from PIL import Image, ImageDraw
from safetensors.numpy import save_file
from transformers import CLIPImageProcessor

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "images")
CLIP_CFG = dict(
    crop_size={"height": 224, "width": 224}, do_center_crop=True, do_normalize=True,
    do_rescale=True, do_resize=True, image_mean=[0.48145466, 0.4578275, 0.40821073],
    image_std=[0.26862954, 0.26130258, 0.27577711], resample=3,
    rescale_factor=0.00392156862745098, size={"shortest_edge": 224})


def synth(w, h, seed, channels=3):
    """Gradients + mild noise + a few shapes, uint8 (h, w, channels)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    planes = []
    for c in range(channels):
        g = 255 * (0.5 + 0.5 * np.sin(x / (7 + 5 * c) + y / (11 + 3 * c) + seed + c))
        g = 0.6 * g + 0.4 * 255 * ((x * (c + 1) + y * (3 - c)) % max(w, 1)) / max(w, 1)
        planes.append(g)
    a = np.stack(planes, -1) + rng.normal(0, 6, (h, w, channels))
    im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8).squeeze() if channels == 1
                         else np.clip(a, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    fill = 255 if channels == 1 else tuple(int(v) for v in rng.integers(0, 256, channels))
    d.rectangle([w // 5, h // 4, w // 2, h // 2], fill=fill)
    d.ellipse([w // 2, h // 3, w - 2, h - 2], outline=0 if channels == 1 else (0,) * channels)
    return np.array(im).reshape(h, w, channels)


def png_chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
         (0, 1, 1, 2)]


def png_bytes(samples, bits, color, interlace=False, plte=None, trns=None, exif=None):
    """A PNG from samples (h, w, ch) of the given bit depth (8 or 16), filter 0 rows."""
    h, w = samples.shape[:2]
    dt = ">u2" if bits == 16 else "u1"

    def rows(img):
        raw = b""
        for r in img:
            raw += b"\0" + r.astype(dt).tobytes()
        return raw
    if interlace:
        raw = b""
        for x0, y0, dx, dy in ADAM7:
            sub = samples[y0::dy, x0::dx]
            if sub.shape[0] and sub.shape[1]:
                raw += rows(sub)
    else:
        raw = rows(samples)
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bits, color, 0, 0,
                                                                int(interlace)))
    if plte is not None:
        out += png_chunk(b"PLTE", plte)
    if trns is not None:
        out += png_chunk(b"tRNS", trns)
    if exif is not None:  # the chunk holds the TIFF block without the "Exif\0\0" prefix
        out += png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\0\0") else exif)
    return out + png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b"")


def pil_bytes(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def exif_orientation(v):
    e = Image.Exif()
    e[0x0112] = v
    return e.tobytes()


def make_images():
    imgs = {}
    rgb = lambda w, h, s: Image.fromarray(synth(w, h, s))
    # JPEG: 4:2:0, 4:2:2, 4:4:4, grey, CMYK (Adobe), progressive, EXIF orientation, odd sizes.
    imgs["jpeg_rgb420_320x240.jpg"] = pil_bytes(rgb(320, 240, 1), "JPEG", quality=85)
    imgs["jpeg_rgb422_300x200.jpg"] = pil_bytes(rgb(300, 200, 2), "JPEG", quality=90, subsampling=1)
    imgs["jpeg_rgb444_37x53.jpg"] = pil_bytes(rgb(37, 53, 3), "JPEG", quality=95, subsampling=0)
    imgs["jpeg_grey_224x224.jpg"] = pil_bytes(Image.fromarray(synth(224, 224, 4, 1)[..., 0]), "JPEG")
    cmyk = Image.fromarray(synth(120, 90, 5, 4), "CMYK")
    imgs["jpeg_cmyk_120x90.jpg"] = pil_bytes(cmyk, "JPEG", quality=90)
    imgs["jpeg_progressive_500x125.jpg"] = pil_bytes(rgb(500, 125, 6), "JPEG", quality=80,
                                                      progressive=True)
    imgs["jpeg_exif6_53x37.jpg"] = pil_bytes(rgb(53, 37, 7), "JPEG", exif=exif_orientation(6))
    # PNG: 8-bit RGB/RGBA/grey/grey+alpha, palette (+tRNS, 4-bit), 1/2-bit grey, 16-bit, Adam7.
    imgs["png_rgb_37x53.png"] = pil_bytes(rgb(37, 53, 10), "PNG")
    imgs["png_rgba_150x100.png"] = pil_bytes(Image.fromarray(synth(150, 100, 11, 4), "RGBA"), "PNG")
    imgs["png_grey_224x224.png"] = pil_bytes(Image.fromarray(synth(224, 224, 12, 1)[..., 0]), "PNG")
    imgs["png_greya_64x48.png"] = png_bytes(synth(64, 48, 13, 2), 8, 4)
    pal = rgb(100, 80, 14).quantize(64)
    imgs["png_palette_trns_100x80.png"] = pil_bytes(pal, "PNG", transparency=3)
    pal16 = rgb(33, 21, 15).quantize(16)
    imgs["png_palette4_33x21.png"] = pil_bytes(pal16, "PNG", bits=4)
    g = synth(40, 30, 16, 1)
    imgs["png_grey1_40x30.png"] = png_bytes(g >> 7, 1, 0) if False else \
        pil_bytes(Image.fromarray(g[..., 0]).convert("1"), "PNG")
    imgs["png_grey2_41x29.png"] = png_bytes_packed(synth(41, 29, 17, 1)[..., 0] >> 6, 2)
    rng = np.random.default_rng(18)
    s16 = synth(50, 40, 18, 3).astype(np.uint16) * 257 + rng.integers(0, 256, (40, 50, 3)).astype(np.uint16)
    imgs["png_rgb16_50x40.png"] = png_bytes(s16, 16, 2)
    s16a = synth(45, 35, 19, 4).astype(np.uint16) * 257
    imgs["png_rgba16_45x35.png"] = png_bytes(s16a, 16, 6)
    g16 = (synth(48, 36, 20, 1).astype(np.uint16) * 3)  # spans 0..765: tests the clip at 255
    imgs["png_grey16_48x36.png"] = png_bytes(g16, 16, 0)
    ga16 = synth(30, 20, 21, 2).astype(np.uint16) * 257 + 100
    imgs["png_greya16_30x20.png"] = png_bytes(ga16, 16, 4)
    imgs["png_interlaced_61x47.png"] = png_bytes(synth(61, 47, 22), 8, 2, interlace=True)
    imgs["png_exif8_35x25.png"] = png_bytes(synth(35, 25, 23), 8, 2, exif=exif_orientation(8))
    # WebP: lossy, lossless, lossy+alpha, lossless+alpha, animated (first frame), EXIF.
    imgs["webp_lossy_400x100.webp"] = pil_bytes(rgb(400, 100, 30), "WEBP", quality=70)
    imgs["webp_lossless_64x48.webp"] = pil_bytes(rgb(64, 48, 31), "WEBP", lossless=True)
    rgba = Image.fromarray(synth(90, 70, 32, 4), "RGBA")
    imgs["webp_lossy_alpha_90x70.webp"] = pil_bytes(rgba, "WEBP", quality=80)
    imgs["webp_lossless_alpha_90x70.webp"] = pil_bytes(rgba, "WEBP", lossless=True, exact=True)
    frames = [rgb(80, 60, 33 + i) for i in range(3)]
    imgs["webp_animated_80x60.webp"] = pil_bytes(frames[0], "WEBP", save_all=True,
                                                 append_images=frames[1:], duration=100)
    imgs["webp_exif3_112x112.webp"] = pil_bytes(rgb(112, 112, 36), "WEBP", quality=75,
                                                exif=exif_orientation(3))
    return imgs


def png_bytes_packed(values, bits):
    """Grey PNG with sub-byte samples (values already in 0 .. 2^bits - 1)."""
    h, w = values.shape
    per = 8 // bits
    raw = b""
    for r in values:
        row = bytearray()
        for i in range(0, w, per):
            byte = 0
            for j in range(per):
                v = int(r[i + j]) if i + j < w else 0
                byte |= v << (8 - bits * (j + 1))
            row.append(byte)
        raw += b"\0" + bytes(row)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bits, 0, 0, 0, 0))
            + png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b""))


def make_bad(imgs):
    bad = {}
    j = imgs["jpeg_rgb444_37x53.jpg"]
    p = imgs["png_rgb_37x53.png"]
    wb = imgs["webp_lossless_64x48.webp"]
    bad["truncated.jpg"] = j[: len(j) // 2]
    bad["truncated_header.jpg"] = j[:40]
    bad["truncated.png"] = p[: len(p) // 2]
    bad["truncated.webp"] = wb[: len(wb) // 2]
    bad["wrong_magic.png"] = b"GIF89a" + p[6:]
    bad["empty.jpg"] = b""
    bad["text.webp"] = b"hello, this is not an image\n"
    # PNG declaring 100000 x 100000 pixels (valid CRC) and a few bytes of data.
    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    bad["huge.png"] = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
                       + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b""))
    # JPEG whose SOF declares 60000 x 60000.
    k = j.find(b"\xff\xc0")
    sof = bytearray(j)
    sof[k + 5: k + 9] = struct.pack(">HH", 60000, 60000)
    bad["huge.jpg"] = bytes(sof)
    # JPEG with an EXIF APP1 whose IFD0 offset points far past the block.
    exif = b"Exif\0\0" + b"II*\0" + struct.pack("<I", 0x7FFFFFF0) + b"\0" * 8
    app1 = b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif
    bad["bad_exif_offset.jpg"] = j[:2] + app1 + j[2:]
    # Same with an entry count larger than the block.
    exif2 = b"Exif\0\0" + b"MM\0*" + struct.pack(">I", 8) + struct.pack(">H", 500) + b"\0" * 12
    app1 = b"\xff\xe1" + struct.pack(">H", len(exif2) + 2) + exif2
    bad["bad_exif_count.jpg"] = j[:2] + app1 + j[2:]
    # PNG with a corrupt IDAT (CRC ok, zlib stream broken).
    q = bytearray(p)
    k = q.find(b"IDAT")
    n = struct.unpack(">I", q[k - 4:k])[0]
    body = bytes(q[k + 4:k + 4 + n // 2]) + b"\xff" * (n - n // 2)
    q[k + 4:k + 4 + n] = body
    q[k + 4 + n:k + 8 + n] = struct.pack(">I", zlib.crc32(b"IDAT" + body))
    bad["corrupt_idat.png"] = bytes(q)
    return bad


def decoder_u8(im, res):
    w, h = im.size
    s = min(w, h)
    c = im.crop(((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2))
    c = c.resize((res, res), resample=Image.BICUBIC, reducing_gap=1)
    return np.array(c)


def make_resample_cases():
    """Random noise images resized to random sizes (up and down, each axis on its own) by PIL
    (reducing_gap None, 1 and 2.5) and by torchvision's uint8 antialiased bicubic. Keys
    r<i>.src (h, w, 3), r<i>.pil, r<i>.pil_gap1, r<i>.pil_gap2_5, r<i>.torch (dh, dw, 3)."""
    import torch
    import torchvision.transforms.v2.functional as tvF
    rng = np.random.default_rng(1234)
    out = {}
    for i in range(48):
        sw, sh = (int(v) for v in rng.integers(1, 64, 2))
        dw, dh = (int(v) for v in rng.integers(1, 48, 2))
        if i % 5 == 4:  # one axis unchanged: a single pass (or the box decides)
            dw = sw
        if i % 7 == 6:
            dh = sh
        src = rng.integers(0, 256, (sh, sw, 3), dtype=np.uint8)
        if i % 3 == 0:  # smooth content too, where rounding ties are more likely
            src = (np.add.outer(np.arange(sh), np.arange(sw))[..., None] * [1, 2, 3] % 256).astype(np.uint8)
        im = Image.fromarray(src)
        out[f"r{i}.src"] = src
        out[f"r{i}.pil"] = np.array(im.resize((dw, dh), Image.BICUBIC))
        out[f"r{i}.pil_gap1"] = np.array(im.resize((dw, dh), Image.BICUBIC, reducing_gap=1))
        out[f"r{i}.pil_gap2_5"] = np.array(im.resize((dw, dh), Image.BICUBIC, reducing_gap=2.5))
        t = torch.from_numpy(src).permute(2, 0, 1).contiguous()
        r = tvF.resize(t, [dh, dw], interpolation=tvF.InterpolationMode.BICUBIC, antialias=True)
        out[f"r{i}.torch"] = np.ascontiguousarray(r.permute(1, 2, 0).numpy())
    return out


def main():
    os.makedirs(os.path.join(OUT, "ok"), exist_ok=True)
    os.makedirs(os.path.join(OUT, "bad"), exist_ok=True)
    proc = CLIPImageProcessor(**CLIP_CFG)
    proc_u8 = CLIPImageProcessor(**dict(CLIP_CFG, do_rescale=False, do_normalize=False))
    imgs = make_images()
    tensors = {}
    f32_names = {"jpeg_rgb420_320x240.jpg", "png_rgb_37x53.png"}
    # CLIP outputs are 150 KB each: kept for a few shapes (portrait upscale, landscape, wide,
    # square, odd crop) to stay under ~3 MB of fixtures.
    clip_names = f32_names | {"jpeg_progressive_500x125.jpg", "png_grey_224x224.png",
                              "jpeg_rgb422_300x200.jpg", "webp_lossy_alpha_90x70.webp"}
    for name, data in sorted(imgs.items()):
        with open(os.path.join(OUT, "ok", name), "wb") as f:
            f.write(data)
        im = Image.open(io.BytesIO(data)).convert("RGB")
        tensors[name + ".rgb"] = np.ascontiguousarray(np.array(im))
        pv = proc(im, return_tensors="np").pixel_values[0]
        u8f = proc_u8(im, return_tensors="np").pixel_values[0]
        u8 = u8f.astype(np.uint8)
        assert np.array_equal(u8.astype(u8f.dtype), u8f)
        if name in clip_names:
            tensors[name + ".clip"] = np.ascontiguousarray(u8.transpose(1, 2, 0))
        mean = np.array(CLIP_CFG["image_mean"], np.float32) * np.float32(255.0)
        std = np.array(CLIP_CFG["image_std"], np.float32) * np.float32(255.0)
        again = (u8.astype(np.float32) - mean[:, None, None]) / std[:, None, None]
        assert np.array_equal(again, pv), (name, np.abs(again - pv).max())
        for res in (64, 96) if name in clip_names else (64,):
            d = decoder_u8(im, res)
            tensors[f"{name}.dec{res}"] = np.ascontiguousarray(d)
        if name in f32_names:
            tensors["clip_f32." + name] = np.ascontiguousarray(pv[:, :8, :].astype(np.float32))
            d = tensors[f"{name}.dec64"].astype(np.float32) / 127.5 - 1
            tensors["dec_f32." + name] = np.ascontiguousarray(d.transpose(2, 0, 1)[:, :8, :])
    for name, data in sorted(make_bad(imgs).items()):
        with open(os.path.join(OUT, "bad", name), "wb") as f:
            f.write(data)
    save_file(tensors, os.path.join(OUT, "expected.safetensors"))
    save_file(make_resample_cases(), os.path.join(OUT, "resample.safetensors"))
    for f in ("expected.safetensors", "resample.safetensors"):
        os.chmod(os.path.join(OUT, f), 0o644)
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(OUT) for f in fs)
    print(f"{len(imgs)} images, {len(make_bad(imgs))} broken files, {total} bytes in {OUT}")


if __name__ == "__main__":
    main()
