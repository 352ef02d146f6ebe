"""Networks: the encoders (U-Net, DenseNet-121) and their factory, task heads, channel adaptation."""

from ssl3d_keras.models.applications import DenseNetEncoder, densenet121_encoder
from ssl3d_keras.models.channels import adapt_input_channels
from ssl3d_keras.models.factory import (
    build_encoder,
    get_encoder,
    list_architectures,
    list_encoders,
)
from ssl3d_keras.models.heads import BigFullyHead, ProjectionHead
from ssl3d_keras.models.unet import UNetEncoder

__all__ = [
    "BigFullyHead",
    "DenseNetEncoder",
    "ProjectionHead",
    "UNetEncoder",
    "adapt_input_channels",
    "build_encoder",
    "densenet121_encoder",
    "get_encoder",
    "list_architectures",
    "list_encoders",
]
