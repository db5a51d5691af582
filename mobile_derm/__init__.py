"""mobile_derm: a skin-disorder classifier packaged for smartphone apps.

The Python API, in a few lines (``mobile_derm.api`` has the details; after
``mobile-derm demo`` the paths exist, and tests/mobile_derm/test_api.py runs this)::

    from mobile_derm import Classifier, Predictor, TrainConfig, load_dataset

    data = load_dataset("runs/demo/data")          # a preset name, a labels CSV or class folders
    clf = Classifier.train(data, TrainConfig(input_size=64, head_epochs=5, finetune_epochs=1), out="runs/quick")
    paths = clf.export("runs/quick/models", variants=("float32", "int8"))   # {variant: path}
    rows = clf.benchmark("runs/quick/models")      # {variant: accuracy, agreement, size, latency}
    result = Predictor(paths["int8"]).predict("photo.jpg")   # quality gate, then LiteRT; no TensorFlow
    if result.classified:                          # False: the gate rejected the photo (result.quality says why)
        print(result.top_k[0], result.abstained)   # result.to_dict(): what `mobile-derm predict` prints

Importing this package does not import TensorFlow: the names above are loaded on
first use (module ``__getattr__``), and the modules that need TensorFlow import it
themselves through ``mobile_derm.tf_setup`` when a call needs it.
"""
__version__ = "0.1.0"

__all__ = ["Classifier", "Predictor", "Prediction", "TrainConfig", "load_dataset",
           "MobileDermError", "DataError", "ConfigError", "ModelFileError"]


def __getattr__(name: str):
    # One explicit import per name, so a reader (and an import-graph tool) sees where each lives.
    if name == "Classifier":
        from mobile_derm.api import Classifier
        return Classifier
    if name == "load_dataset":
        from mobile_derm.api import load_dataset
        return load_dataset
    if name == "Predictor":
        from mobile_derm.app.predict import Predictor
        return Predictor
    if name == "Prediction":
        from mobile_derm.app.predict import Prediction
        return Prediction
    if name == "TrainConfig":
        from mobile_derm.training.config import TrainConfig
        return TrainConfig
    if name in ("MobileDermError", "DataError", "ConfigError", "ModelFileError"):
        from mobile_derm import errors
        return getattr(errors, name)
    raise AttributeError(f"module 'mobile_derm' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
