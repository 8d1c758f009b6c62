"""qvl-client: a thin, torch-free client for Qwen3-VL servers that speak the OpenAI API.

Names are imported on first use (PEP 562), so `import qvl_client` stays fast; the OpenAI SDK
is loaded when a client class is first touched.
"""

from importlib import import_module

_WHERE = {
    "VisionClient": "client", "AsyncVisionClient": "client", "Conversation": "client",
    "Result": "client", "Usage": "client", "BatchItemError": "batch",
    "ImageInputError": "images", "PreparedImage": "images", "load_image": "images",
    "prepare_image": "images", "RetryPolicy": "retry", "StreamBroken": "retry",
    "image_tokens": "vision", "smart_resize": "vision",
}
__all__ = sorted(_WHERE)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(import_module(f"qvl_client.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'qvl_client' has no attribute {name!r}")


def __dir__():
    return __all__
