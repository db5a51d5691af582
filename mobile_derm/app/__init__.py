"""The app side, what a phone does, with no TensorFlow: decoding and pre-processing
(``preprocess``), the facts a model file carries (``model_info``, ``model_file``) and
LiteRT prediction (``predict``)."""
