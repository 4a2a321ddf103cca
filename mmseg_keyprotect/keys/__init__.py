"""Keys: the secret value, key files, and the key sources configs name.

* :mod:`.secret`: :class:`SecretKey` (32 bytes; fingerprint; keyed derivations;
  read from a file, a variable or a published seed; pickled by origin only);
* :mod:`.keyfile`: the key file format, reading it with permission checks and
  writing it atomically;
* :mod:`.sources`: the one definition of a key source in a config
  (``dict(file=...)``, ``dict(env=...)``, ``dict(seed=..., published=True)``):
  validation, resolution, replacement and redaction over a whole config.

Following a key from a config to the cipher that uses it visits each module
once: sources -> secret -> keyfile.
"""
from .keyfile import FILE_HEADER, KEY_BYTES, read_key_file, write_key_file
from .secret import SecretKey, WeakKeyWarning
from .sources import (COMPONENT_FIELDS, REDACTED, SOURCE_FIELDS, KeyLike, KeySpec,
                      find_key_sources, is_key_source, key_from, parse_source,
                      redact_key_sources, replace_key_sources, resolve_key,
                      resolve_key_sources)

__all__ = [
    'SecretKey', 'WeakKeyWarning', 'KeySpec', 'KeyLike', 'KEY_BYTES', 'FILE_HEADER',
    'read_key_file', 'write_key_file', 'SOURCE_FIELDS', 'REDACTED', 'COMPONENT_FIELDS',
    'parse_source', 'is_key_source', 'resolve_key', 'key_from', 'find_key_sources',
    'replace_key_sources', 'resolve_key_sources', 'redact_key_sources'
]
