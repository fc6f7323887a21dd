"""Data: one reader per format (Aff-Wild2, AffectNet, FER+, the synthetic faces, TFRecord shards), the format
table (``formats``), image checks (``images``) and the tf.data input pipeline (``datasets``)."""
