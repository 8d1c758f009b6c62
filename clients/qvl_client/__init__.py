"""qvl-client: a thin, torch-free client for Qwen3-VL servers that speak the OpenAI API."""

from qvl_client.batch import BatchItemError
from qvl_client.client import AsyncVisionClient, Conversation, Result, Usage, VisionClient
from qvl_client.images import ImageInputError, PreparedImage, load_image, prepare_image
from qvl_client.retry import RetryPolicy, StreamBroken
from qvl_client.vision import image_tokens, smart_resize

__all__ = ["AsyncVisionClient", "BatchItemError", "Conversation", "ImageInputError",
           "PreparedImage", "Result", "RetryPolicy", "StreamBroken", "Usage", "VisionClient",
           "image_tokens", "load_image", "prepare_image", "smart_resize"]
__version__ = "0.1.0"
