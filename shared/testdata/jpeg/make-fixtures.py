#!/usr/bin/env python3
"""Make the JPEG decoder's fixtures and what Pillow decodes them to.

The fixtures are small crops of ../../../../shared/corpus/real/chelsea.png saved in the JPEG
variants that decoders disagree on: each chroma subsampling (4:4:4, 4:2:2, 4:2:0, 4:4:0, 4:1:1),
grayscale, Adobe CMYK, YCCK and CMYK without an Adobe segment, RGB without a colour transform, progressive, arithmetic coding, restart
markers and an Exif orientation. Odd sizes, so that edge blocks are partial. expected.txt holds,
for each fixture and each JPEG of the shared corpus, the SHA-256 of Pillow's decode converted to
RGB (what Pillow's WebP encoder is given) and the Exif orientation Pillow reads;
`convert::jpeg::tests` checks ours against it.

Run once, with Pillow (its wheels bundle libjpeg-turbo 3.x) and libjpeg-turbo's cjpeg (Debian's
libjpeg-turbo-progs) for the variants Pillow cannot write:
  python3 shared/testdata/jpeg/make-fixtures.py [--corpus DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import subprocess
from pathlib import Path

from PIL import Image, features

HERE = Path(__file__).resolve().parent


def cjpeg(img: Image.Image, *args: str) -> bytes:
    ppm = io.BytesIO()
    img.save(ppm, "PPM")
    return subprocess.run(["cjpeg", "-quality", "80", *args], input=ppm.getvalue(), capture_output=True,
                          check=True).stdout


def pillow(img: Image.Image, **kw: object) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=80, **kw)
    return out.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", type=Path, default=HERE.parents[3] / "shared" / "corpus")
    args = ap.parse_args()

    src = Image.open(args.corpus / "real" / "chelsea.png").convert("RGB").crop((100, 60, 221, 147))
    exif = Image.Exif()
    exif[0x0112] = 8
    fixtures = {
        "444.jpg": pillow(src, subsampling="4:4:4"),
        "422.jpg": pillow(src, subsampling="4:2:2"),
        "420.jpg": pillow(src, subsampling="4:2:0"),
        "440.jpg": cjpeg(src, "-sample", "1x2"),
        "411.jpg": cjpeg(src, "-sample", "4x1"),
        "gray.jpg": pillow(src.convert("L")),
        "cmyk.jpg": pillow(src.convert("CMYK")),
        "rgb.jpg": cjpeg(src, "-rgb"),
        "progressive.jpg": pillow(src, progressive=True),
        "arithmetic.jpg": cjpeg(src, "-arithmetic"),
        "restart.jpg": cjpeg(src, "-restart", "1"),
        "exif-orientation-8.jpg": pillow(src, exif=exif.tobytes()),
    }
    # Adobe's APP14 says how 4-channel files are coded: "YCCK" (transform 2) must be converted
    # back to CMYK by the decoder, and without the segment the channels are taken as plain CMYK.
    cmyk = fixtures["cmyk.jpg"]
    adobe = cmyk.index(b"\xff\xee\x00\x0eAdobe")  # 16 bytes, the transform last
    fixtures["ycck.jpg"] = cmyk[:adobe + 15] + b"\x02" + cmyk[adobe + 16:]
    fixtures["cmyk-no-adobe.jpg"] = cmyk[:adobe] + cmyk[adobe + 16:]
    for name, data in fixtures.items():
        (HERE / name).write_bytes(data)

    lines = [f"# Pillow {Image.__version__}, libjpeg-turbo {features.version('libjpeg_turbo')}: "
             "file, SHA-256 of the decode as RGB, Exif orientation (1 if none)"]
    paths = sorted(HERE.glob("*.jpg")) + sorted((args.corpus / "real").glob("*.jpg"))
    for path in paths:
        with Image.open(path) as im:
            rgb = im.convert("RGB").tobytes()
            orientation = im.getexif().get(0x0112, 1)
        lines.append(f"{path.name} {hashlib.sha256(rgb).hexdigest()} {orientation}")
    (HERE / "expected.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
