"""mmseg-keyprotect: key-based access control for MMSegmentation models.

Importing the package registers every component in mmseg's registries, so a
config only needs::

    custom_imports = dict(imports=['mmseg_keyprotect'], allow_failed_imports=False)
"""
from . import datasets  # noqa: F401  (registers DATASETS)
from . import engine  # noqa: F401  (weights-only checkpoint loader)
from . import models  # noqa: F401  (registers MODELS)
from . import transforms  # noqa: F401  (registers TRANSFORMS)
from . import attacks  # noqa: F401  (registers AttackedSegmentor)
from .keyed import KeyedComponent
from .keys import SecretKey, WeakKeyWarning, resolve_key
from .version import __version__

__all__ = ['SecretKey', 'WeakKeyWarning', 'resolve_key', 'KeyedComponent', '__version__']
