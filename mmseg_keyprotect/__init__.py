"""mmseg-keyprotect: key-based access control for MMSegmentation models.

Importing the package registers its components in mmseg's registries and does
nothing else (no loader or launcher of mmengine is changed, the attack suite
is not loaded), so a config only needs::

    custom_imports = dict(imports=['mmseg_keyprotect', 'mmseg_keyprotect.compat'],
                          allow_failed_imports=False)

where ``mmseg_keyprotect.compat`` opts into the weights-only checkpoint
loaders for every mmseg entry point. The attack suite registers its
components when ``mmseg_keyprotect.attacks`` is imported.
"""
from . import datasets  # noqa: F401  (registers DATASETS)
from . import engine  # noqa: F401  (registers RUNNERS, HOOKS)
from .evaluation import loops, metrics  # noqa: F401  (registers LOOPS, METRICS)
from . import models  # noqa: F401  (registers MODELS)
from . import transforms  # noqa: F401  (registers TRANSFORMS)
from .keyed import KeyedComponent
from .keys import SecretKey, WeakKeyWarning, resolve_key
from .protection import Protection
from .version import __version__

__all__ = ['SecretKey', 'WeakKeyWarning', 'resolve_key', 'KeyedComponent', 'Protection',
           '__version__']
