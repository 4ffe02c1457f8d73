"""What a payload reveals about the image it came from: reconstruction metrics (PSNR, SSIM), an
inversion attacker trained on public images, and the leakage measurement built from them.

Cloud-side only in the sense of the data it reads (FeatureService payloads); no Flower here.
"""
