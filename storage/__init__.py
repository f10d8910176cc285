"""TinyDB persistence for rlchat: sessions, turns and policy snapshots.

This layer imports nothing of the project and no heavy library, so the
command line, export and replay can use it without loading a model.
"""

from storage.atomic import AtomicJSONStorage, CorruptFileError
from storage.lock import DataDirInUse
from storage.paths import default_data_dir
from storage.store import Store

__all__ = ["AtomicJSONStorage", "CorruptFileError", "DataDirInUse", "Store", "default_data_dir"]
