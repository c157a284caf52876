"""The lean trainer: compound loss, 3D U-Net, training loop (``python -m trainer``)."""
