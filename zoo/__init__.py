"""The preset registry (data): one folder per named preset. Installed as ``keras_mtanet.registry``."""
