"""The model: backbone specs (``specs``), Keras EfficientNet-Lite and its offline
ImageNet weights (``backbones``, ``weights``), the classifier and ensembles
(``classifier``), test-time views (``views``) and feature-space abstention
(``familiarity``)."""
