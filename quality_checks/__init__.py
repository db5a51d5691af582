"""mobile_derm_quality: the photo-quality gate (numpy + OpenCV only; no TensorFlow, no mobile_derm).

    from mobile_derm_quality import check_photo
    v = check_photo("photo.jpg")
    v.decision   # "accept" | "warn" | "reject"
    v.guidance   # ["Hold the phone still", ...]
"""

# This folder installs as mobile_derm_quality (setup.cfg: package_dir); imported under its folder
# name (for example from the repository root, where the folder is on sys.path) it
# would be a second copy of every module, with its own classes and errors.
if __name__ != "mobile_derm_quality":
    raise ImportError(f"the quality_checks/ folder is the package mobile_derm_quality; import mobile_derm_quality, not {__name__}")

from mobile_derm_quality.calibrate import calibrate
from mobile_derm_quality.config import CHECK_NAMES, GateConfig
from mobile_derm_quality.decode import DecodedPhoto, decode_image_bytes, decode_photo, read_image, read_photo
from mobile_derm_quality.errors import GateConfigError, ImageReadError, MobileDermError, QualityCheckError
from mobile_derm_quality.gate import GUIDANCE, CheckResult, Verdict, assess, assess_photo, check_photo
from mobile_derm_quality.gate_twin import GateTwin, GateTwinError

__version__ = "0.1.0"

__all__ = [
    "CHECK_NAMES",
    "GUIDANCE",
    "CheckResult",
    "GateConfig",
    "GateConfigError",
    "GateTwin",
    "GateTwinError",
    "ImageReadError",
    "MobileDermError",
    "QualityCheckError",
    "Verdict",
    "assess",
    "assess_photo",
    "calibrate",
    "check_photo",
    "DecodedPhoto",
    "decode_image_bytes",
    "decode_photo",
    "read_image",
    "read_photo",
]
