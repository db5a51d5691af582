"""mobile_derm: a skin-disorder classifier packaged for smartphone apps.

Importing this package does not import TensorFlow; the modules that need it
(``backbones``, ``train``, ``pipeline``) import it themselves through
``mobile_derm.tf_setup``.
"""
__version__ = "0.1.0"
