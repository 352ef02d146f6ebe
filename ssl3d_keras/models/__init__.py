"""Networks: the U-Net encoder (backbone), task heads, channel adaptation, DenseNet-121."""

from ssl3d_keras.models.applications import densenet121_encoder
from ssl3d_keras.models.channels import adapt_input_channels
from ssl3d_keras.models.heads import BigFullyHead, ProjectionHead
from ssl3d_keras.models.unet import UNetEncoder

__all__ = [
    "BigFullyHead",
    "ProjectionHead",
    "UNetEncoder",
    "adapt_input_channels",
    "densenet121_encoder",
]
