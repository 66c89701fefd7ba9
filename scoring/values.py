"""The one cast that moves every value of every file and format into the run's schema.

The rule: lossless or rejected, value by value. A value is written (or handed to the model) only
when the converted value stands for exactly the value the input held; otherwise its row is
rejected with the reason. The outcome for a value never depends on the other values of its
batch, block or file: every check below is a function of the value alone (and of its type as
the input declared it).

Keys (columns copied to the output) are written verbatim:
- a whole number becomes a float only when the float holds it exactly (|v| <= 2^53 or exact);
- a float becomes a whole number only when it is whole, in range and below 2^53;
- a timestamp becomes a date only at midnight; a finer timestamp unit a coarser one only when
  nothing is cut off;
- a boolean never becomes a number, a number never a boolean;
- text becomes a number, date or boolean only when the typed value writes back as spelled;
- a whole number becomes text (its digits, its one spelling); a float or a boolean never does
  (its spelling in the input is not known once parsed).
Features are converted as the model takes them: text to a number only when all of it is a
number (ASCII digits, optional sign, point and exponent, surrounding spaces; never `1_000` or
other scripts' digits), a whole number to the nearest float64 (as scikit-learn converts it),
a boolean to 0.0/1.0; anything else by the key rules.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# What Arrow's text-to-number cast (and its CSV reader) take, once surrounding spaces are cut.
_NUMBER = r"^[-+]?([0-9]+\.?[0-9]*([eE][-+]?[0-9]+)?|\.[0-9]+([eE][-+]?[0-9]+)?|inf|infinity|nan)$"
_WHOLE = r"^[-+]?[0-9]+$"
_CANONICAL_WHOLE = r"^(0|-?[1-9][0-9]*)$"
_EXACT_FLOAT = 2**53


class Cast(NamedTuple):
    """A column in its target type (null where a value was rejected) and the rejections: each a
    mask of rejected values and the reason, with {!r} standing for the value."""

    values: pa.Array
    failures: list[tuple[np.ndarray, str]]

    @property
    def failed(self) -> np.ndarray | None:
        """The mask of every rejected value, or None when none was."""
        if not self.failures:
            return None
        mask = np.zeros(len(self.values), dtype=bool)
        for m, _ in self.failures:
            mask |= m
        return mask


def plain(values) -> pa.Array:
    """A column as one array of a plain type: chunks combined, a dictionary decoded, large or
    view text as text."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    t = values.type
    if pa.types.is_dictionary(t):
        values = values.cast(t.value_type)
        t = values.type
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        values = values.cast(pa.string())
    return values


def is_text(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def kind(t: pa.DataType) -> str:
    """A type as a person says it."""
    if pa.types.is_floating(t):
        return "number"
    if pa.types.is_integer(t):
        return f"whole number ({t})"
    if pa.types.is_boolean(t):
        return "boolean"
    if is_text(t):
        return "text"
    return str(t)


def cast(values, target: pa.DataType, *, key: bool, name: str) -> Cast:
    """Moves a column into its target type, value by value: lossless or rejected.

    Args:
        values: the column as read (any Arrow type, a dense union for a JSON column whose
            values are of several kinds).
        target: the run's type for the column.
        key: whether the column is written as a key (verbatim) or handed to the model.
        name: the column's name, for the reasons.
    """
    values = plain(values)
    label = f"key {name}" if key else name
    t = values.type
    if t == target:
        return Cast(values, [])
    if pa.types.is_union(t):
        return _union(values, target, key, name)
    if pa.types.is_null(t):
        return Cast(pa.nulls(len(values), target), [])
    if pa.types.is_string(t):
        return _from_text(values, target, key, name, label)
    if pa.types.is_boolean(t):
        if pa.types.is_floating(target) and not key:
            return Cast(pc.cast(values, target), [])
        return _reject(values, target, f"{label}: a boolean ({{!r}}) is not a {kind(target)}")
    if pa.types.is_string(target):
        if pa.types.is_integer(t):
            return Cast(pc.cast(values, target), [])
        return _reject(
            values,
            target,
            f"{label}: {{!r}} is a {kind(t)} ({t}), and {name} is text: a parsed {kind(t)}'s "
            "spelling in the input is not known, so it is not turned into text",
        )
    if pa.types.is_boolean(target):
        return _reject(values, target, f"{label}: {{!r}} is a {kind(t)}, not a boolean")
    if pa.types.is_temporal(t) != pa.types.is_temporal(target):  # a number is no date
        return _reject(values, target, f"{label}: {{!r}} is a {kind(t)}, not a {kind(target)}")
    if pa.types.is_integer(t) and pa.types.is_floating(target):
        return _int_to_float(values, target, key, label)
    if pa.types.is_floating(t) and pa.types.is_integer(target):
        return _float_to_int(values, target, key, label)
    if pa.types.is_integer(t) and pa.types.is_integer(target):
        return _int_to_int(values, target, label)
    if pa.types.is_timestamp(t) and pa.types.is_date(target):
        return _timestamp_to_date(values, target, label)
    done = _generic(values, target, label)
    if pa.types.is_decimal(t) or pa.types.is_decimal(target):  # Arrow rounds to a scale
        return _round_trip(values, done, label)
    return done


def _round_trip(values: pa.Array, done: Cast, label: str) -> Cast:
    """A cast key kept only where it converts back to exactly the value given."""
    try:
        back = pc.cast(done.values, values.type)
        altered = mask(pc.not_equal(back, values))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        altered = np.zeros(len(values), dtype=bool)
        for i, (given, made) in enumerate(zip(values, done.values)):
            if given.is_valid and made.is_valid:
                altered[i] = given.as_py() != made.as_py()
    if not altered.any():
        return done
    reason = f"{label}: {{!r}} does not convert exactly to {done.values.type}"
    return Cast(_nulled(done.values, altered), [*done.failures, (altered, reason)])


def _reject(values: pa.Array, target: pa.DataType, reason: str) -> Cast:
    """Every non-null value rejected for the same reason."""
    rejected = mask(values.is_valid())
    return Cast(pa.nulls(len(values), target), [(rejected, reason)] if rejected.any() else [])


def mask(values) -> np.ndarray:
    """A boolean Arrow column as a NumPy mask, null as False."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return values.fill_null(False).to_numpy(zero_copy_only=False)


def _nulled(values: pa.Array, bad: np.ndarray) -> pa.Array:
    return pc.if_else(pa.array(bad), pa.scalar(None, values.type), values)


def _union(values: pa.UnionArray, target: pa.DataType, key: bool, name: str) -> Cast:
    """A column of several kinds: each kind cast on its own, as if it stood alone."""
    # From the buffers: pyarrow's `offsets` of a sliced union ignore the slice.
    n = len(values)
    buffers = values.buffers()
    start = values.offset
    codes = np.frombuffer(buffers[1], dtype=np.int8)[start : start + n]
    offsets = np.frombuffer(buffers[2], dtype=np.int32)[start : start + n]
    parts, positions, failures = [], [], []
    for child_index, code in enumerate(values.type.type_codes):
        where = np.flatnonzero(codes == code)
        if not len(where):
            continue
        child = values.field(child_index).take(pa.array(offsets[where]))
        if values.type[child_index].name == "json":  # a JSON object or array
            label = f"key {name}" if key else name
            done = _reject(child, target, f"{label}: {{}} is a JSON object or array")
        else:
            done = cast(child, target, key=key, name=name)
        parts.append(done.values)
        positions.append(where)
        for failed, reason in done.failures:
            full = np.zeros(n, dtype=bool)
            full[where[failed]] = True
            failures.append((full, reason))
    if not parts:
        return Cast(pa.nulls(n, target), [])
    order = np.argsort(np.concatenate(positions), kind="stable")
    return Cast(pa.concat_arrays(parts).take(pa.array(order)), failures)


def _int_to_float(values: pa.Array, target: pa.DataType, key: bool, label: str) -> Cast:
    out = pc.cast(values, target, safe=False)
    if not key:
        return Cast(out, [])  # the model takes the nearest float, as scikit-learn converts it
    ints = values.cast(pa.int64()) if not pa.types.is_uint64(values.type) else values
    big = mask(pc.greater_equal(pc.abs(out.cast(pa.float64())), float(_EXACT_FLOAT)))
    if not big.any():
        return Cast(out, [])
    given = ints.fill_null(0).to_numpy(zero_copy_only=False)
    floats = given.astype(np.float64)
    with np.errstate(all="ignore"):
        inexact = big & ((np.abs(floats) >= 2.0**63) | (floats.astype(np.int64) != given))
    if not inexact.any():
        return Cast(out, [])
    reason = f"{label}: {{!r}} is not exactly a float64 (a whole number above 2^53 loses digits)"
    return Cast(_nulled(out, inexact), [(inexact, reason)])


def _float_to_int(values: pa.Array, target: pa.DataType, key: bool, label: str) -> Cast:
    v = values.cast(pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False)
    valid = mask(values.is_valid())
    info = np.iinfo(target.to_pandas_dtype())
    with np.errstate(all="ignore"):
        whole = np.isfinite(v) & (np.floor(v) == v)
        signed = info.min < 0
        in_range = (v >= float(info.min)) & (v < 2.0 ** (info.bits - 1 if signed else info.bits))
        if key:
            in_range &= np.abs(v) <= _EXACT_FLOAT
    not_whole = valid & ~whole
    outside = valid & whole & ~in_range
    failures = []
    if not_whole.any():
        failures.append((not_whole, f"{label}: {{!r}} is not a whole number"))
    if outside.any():
        reason = (
            f"{label}: {{!r}} was read as a float and is too large to be exactly the whole "
            "number the input holds"
            if key and info.bits == 64
            else f"{label}: {{!r}} is outside the {target} range"
        )
        failures.append((outside, reason))
    bad = not_whole | outside
    source = _nulled(values, bad) if bad.any() else values
    return Cast(pc.cast(source, target, safe=False), failures)


def _int_to_int(values: pa.Array, target: pa.DataType, label: str) -> Cast:
    try:
        return Cast(pc.cast(values, target), [])
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    info = np.iinfo(target.to_pandas_dtype())
    low, high = pa.scalar(int(info.min)), pa.scalar(int(info.max))
    wide = values.cast(pa.decimal128(38, 0))
    outside = mask(
        pc.or_(pc.less(wide, low.cast(wide.type)), pc.greater(wide, high.cast(wide.type)))
    )
    reason = f"{label}: {{!r}} is outside the {target} range"
    return Cast(pc.cast(_nulled(values, outside), target), [(outside, reason)])


def _timestamp_to_date(values: pa.Array, target: pa.DataType, label: str) -> Cast:
    dates = pc.cast(values, target, safe=False)
    back = pc.cast(dates, values.type)
    timed = mask(pc.not_equal(back, values))
    if not timed.any():
        return Cast(dates, [])
    reason = f"{label}: {{!r}} is a timestamp with a time of day, and {label.split()[-1]} is a date"
    return Cast(_nulled(dates, timed), [(timed, reason)])


def _generic(values: pa.Array, target: pa.DataType, label: str) -> Cast:
    """Any other pair of types: Arrow's safe cast, and value by value where it fails."""
    try:
        return Cast(pc.cast(values, target), [])
    except pa.ArrowNotImplementedError:
        return _reject(
            values, target, f"{label}: {{!r}} is a {values.type} value, not a {kind(target)}"
        )
    except pa.ArrowInvalid:
        pass
    bad = np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values):
        if not v.is_valid:
            continue
        try:
            v.cast(target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OverflowError):
            bad[i] = True
    what = (
        "is outside the range of" if pa.types.is_integer(target) else "does not convert exactly to"
    )
    reason = f"{label}: {{!r}} {what} {target}"
    return Cast(pc.cast(_nulled(values, bad), target), [(bad, reason)])


def _from_text(values: pa.Array, target: pa.DataType, key: bool, name: str, label: str) -> Cast:
    if pa.types.is_string(target):
        return Cast(values, [])
    if key:
        return _spelled(values, target, name, label)
    if pa.types.is_floating(target) or pa.types.is_integer(target):
        trimmed = pc.ascii_trim_whitespace(values)
        pattern = _NUMBER if pa.types.is_floating(target) else _WHOLE
        number = mask(pc.match_substring_regex(trimmed, pattern, ignore_case=True))
        not_number = mask(values.is_valid()) & ~number
        failures = []
        if not_number.any():
            failures.append((not_number, f"{label}: {{!r}} is not a {kind(target)}"))
            trimmed = _nulled(trimmed, not_number)
        done = _generic(trimmed, target, label)
        failures += done.failures  # digits, but outside the range
        return Cast(done.values, failures)
    done = _generic(values, target, label)
    return Cast(
        done.values, [(m, f"{label}: {{!r}} is not a {kind(target)}") for m, _ in done.failures]
    )


def _all_canonical(values: pa.Array, target: pa.DataType) -> pa.Array | None:
    """The whole numbers, when every one is written back exactly as spelled (None: some
    are not, or do not convert): three passes of Arrow, a third of the regex's cost."""
    try:
        typed = pc.cast(values, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return typed if pc.cast(typed, pa.string()).equals(values) else None


def _spelled(values: pa.Array, target: pa.DataType, name: str, label: str) -> Cast:
    """A text key as a typed key: only when the typed value writes back exactly as spelled."""
    hint = f"set --column_types {name}:string to keep it as text"
    failures = []
    if pa.types.is_integer(target):
        written = _all_canonical(values, target)
        if written is not None:
            return Cast(written, [])
        canonical = mask(pc.match_substring_regex(values, _CANONICAL_WHOLE))
        not_spelled = mask(values.is_valid()) & ~canonical
        if not_spelled.any():
            reason = f"{label}: {{!r}} would not be written as spelled as {target}; {hint}"
            failures.append((not_spelled, reason))
            values = _nulled(values, not_spelled)
        done = _generic(values, target, label)
        failures += [
            (m, f"{label}: {{!r}} is outside the {target} range; {hint}") for m, _ in done.failures
        ]
        return Cast(done.values, failures)
    done = _generic(values, target, label)
    failures += [(m, f"{label}: {{!r}} is not a {kind(target)}; {hint}") for m, _ in done.failures]
    written = pc.cast(done.values, pa.string())
    altered = mask(pc.not_equal(written, values))  # a value rejected above is null here
    if altered.any():
        reason = f"{label}: {{!r}} would not be written as spelled as {target}; {hint}"
        failures.append((altered, reason))
        return Cast(_nulled(done.values, altered), failures)
    return Cast(done.values, failures)
