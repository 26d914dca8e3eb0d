"""Run by the model server's python, not imported: fetches a model as KServe's storage-initializer
container does (the `kserve-storage` package), into the directory the model server loads.

    python storage_initializer.py STORAGE_URI OUT_DIR

For a local (`file://`) URI kserve-storage links the files instead of copying them; MLflow refuses
to load a model whose files resolve outside its directory, so the links become copies, as a
download from a bucket would give.
"""

import os
import shutil
import sys

if __name__ == "__main__":
    from kserve_storage import Storage

    out_dir = sys.argv[2]
    Storage.download(sys.argv[1], out_dir)
    for entry in os.listdir(out_dir):
        path = os.path.join(out_dir, entry)
        if os.path.islink(path):
            target = os.path.realpath(path)
            os.unlink(path)
            if os.path.isdir(target):
                shutil.copytree(target, path)
            else:
                shutil.copy2(target, path)
