"""TinyDB persistence for rlchat: sessions, turns and policy snapshots.

This layer imports nothing of the project and no heavy library, so the
command line, export and replay can use it without loading a model.
"""

from rlchat.storage.atomic import AtomicJSONStorage, CorruptFileError
from rlchat.storage.faults import StorageFault
from rlchat.storage.lock import DataDirInUse
from rlchat.storage.paths import default_data_dir
from rlchat.storage.store import Store

__all__ = ["AtomicJSONStorage", "CorruptFileError", "DataDirInUse", "Store", "StorageFault",
           "default_data_dir"]
