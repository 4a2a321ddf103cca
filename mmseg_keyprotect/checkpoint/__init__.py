"""The sealed checkpoint file: its format, AES-GCM sealing, whole-checkpoint seal/open, safe loading.

* :mod:`.format`: names (``MARKER``, ``TREE_MARKER``, ``META_KEY`` ...), the one
  canonical encoding, associated data, MACs, group headers;
* :mod:`.gcm`: AES-256-GCM streaming, the thread pool and the ciphertext buffers;
* :mod:`.group`: seal one group of tensors, or check and open it all or nothing;
* :mod:`.tree`: seal, verify or open a whole mmengine checkpoint; upgrade an old one;
* :mod:`.manifest`: one MAC over the whole file (groups, non-tensor state, run, iteration);
* :mod:`.rollback`: the newest iteration of each run in a work_dir, for ``--resume``;
* :mod:`.safe_load`: weights-only loaders for every scheme of mmengine's ``CheckpointLoader``;
* :mod:`.scope`: the code paths that seal what they take (no clear-weights warning);
* :mod:`.files`: finding a run's checkpoints, replacing or upgrading a file atomically.

The model side (a model that opens its sealed ``state_dict``) is
:mod:`mmseg_keyprotect.models.weight_encryption`; the hooks that call this
package on every save and load are in :mod:`mmseg_keyprotect.engine.hooks`.
"""
from .files import find_checkpoint, save_atomically, upgrade_file, write_atomically
from .format import (FORMAT, MANIFEST_KEY, MARKER, META_KEY, META_MAC_KEY, TREE_MARKER, Descriptor,
                     EncryptedWeightsError, is_sealed, read_header)
from .gcm import release_seal_buffers
from .group import SealedGroup, open_sealed, seal
from .safe_load import (CHECKPOINT_GLOBALS, SAFE_LOADERS, UnsafeCheckpointError,
                        install_safe_loaders, load_from_local_weights_only, safe_loaders_installed,
                        safe_torch_load, uninstall_safe_loaders)
from .scope import sealing, sealing_active
from .tree import (authenticate, open_checkpoint, seal_checkpoint, seal_file, seal_state_dict,
                   tensors_with_paths, upgrade_checkpoint, verify_file)

__all__ = [
    'FORMAT', 'MARKER', 'META_KEY', 'META_MAC_KEY', 'TREE_MARKER', 'Descriptor',
    'EncryptedWeightsError', 'is_sealed', 'read_header', 'release_seal_buffers', 'SealedGroup',
    'open_sealed', 'seal', 'CHECKPOINT_GLOBALS', 'SAFE_LOADERS', 'UnsafeCheckpointError',
    'install_safe_loaders', 'load_from_local_weights_only', 'safe_loaders_installed',
    'safe_torch_load', 'uninstall_safe_loaders', 'find_checkpoint', 'save_atomically',
    'authenticate', 'open_checkpoint', 'seal_checkpoint', 'seal_state_dict', 'tensors_with_paths',
    'upgrade_checkpoint', 'verify_file', 'seal_file', 'sealing', 'sealing_active', 'upgrade_file', 'write_atomically', 'MANIFEST_KEY'
]
