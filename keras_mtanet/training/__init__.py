"""Training: the recipe (a JSON config and what it builds), the run (train()), its restartable run folder and
callbacks, tf.distribute (TensorFlow) and keras.distribution (JAX) data parallelism."""
