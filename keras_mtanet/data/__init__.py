"""Readers for Aff-Wild2 and AffectNet, synthetic faces, and the tf.data input pipeline."""
