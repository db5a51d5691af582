"""quality_checks: the photo-quality gate (numpy + OpenCV only; no TensorFlow, no mobile_derm).

    from quality_checks import check_photo
    v = check_photo("photo.jpg")
    v.decision   # "accept" | "warn" | "reject"
    v.guidance   # ["Hold the phone still", ...]
"""
from quality_checks.calibrate import calibrate
from quality_checks.config import CHECK_NAMES, GateConfig
from quality_checks.decode import decode_image_bytes, read_image
from quality_checks.errors import GateConfigError, ImageReadError, QualityCheckError
from quality_checks.gate import GUIDANCE, CheckResult, Verdict, assess, check_photo

__version__ = "0.1.0"

__all__ = [
    "CHECK_NAMES",
    "GUIDANCE",
    "CheckResult",
    "GateConfig",
    "GateConfigError",
    "ImageReadError",
    "QualityCheckError",
    "Verdict",
    "assess",
    "calibrate",
    "check_photo",
    "decode_image_bytes",
    "read_image",
]
