"""Run by the model server's python, not imported: fetches a model as KServe's storage-initializer
container does (the `kserve-storage` package), into the directory the model server loads.

    python storage_initializer.py STORAGE_URI OUT_DIR
"""

import sys

if __name__ == "__main__":
    from kserve_storage import Storage

    Storage.download(sys.argv[1], sys.argv[2])
