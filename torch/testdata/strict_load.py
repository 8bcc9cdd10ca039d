# strict_load: torch.load as PyTorch >= 2.6 does it by default (weights_only=True), for the
# interoperability tests: files that metanas-go writes must load that way.
import pickletools, zipfile, sys, torch
def strict_load(path):
    """torch.load as PyTorch >= 2.6 does by default (weights_only=True); on older PyTorch,
    whose weights_only unpickler lacks some opcodes, check the globals instead."""
    if tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 6):
        return torch.load(path, weights_only=True)
    allowed = {"torch._utils _rebuild_tensor_v2", "collections OrderedDict", "torch FloatStorage",
               "torch DoubleStorage", "torch LongStorage", "torch BoolStorage", "torch IntStorage"}
    with zipfile.ZipFile(path) as z:
        pkl = z.read([n for n in z.namelist() if n.endswith("data.pkl")][0])
    strs = []
    for op, arg, _ in pickletools.genops(pkl):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strs.append(arg)
        elif op.name == "GLOBAL" and arg not in allowed:
            raise SystemExit("global %s not allowed by weights_only loading" % arg)
        elif op.name == "STACK_GLOBAL" and " ".join(strs[-2:]) not in allowed:
            raise SystemExit("global %s not allowed by weights_only loading" % " ".join(strs[-2:]))
    return torch.load(path)
