"""Training: the hyperparameters (``config``), the tf.data pipeline (``pipeline``),
run folders and the pixel cache (``runs``), the fitting loop (``fit``), the prior
correction (``logit_adjustment``) and grouped cross-validation (``crossval``)."""
