"""One Rego policy on regorus (upstream's engine): parsed once, evaluated many times, any thread.

``RegoPolicy`` is the reusable core every Rego user in trustpod builds on (attestation policies,
the KBS resource policy, the kata agent policy)::

    policy = RegoPolicy(
        {"rules.rego": text},            # one or several modules, name -> text
        data={"k": "v"},                 # or data_json='{"k":"v"}' (added once)
        rego_v0=False,                   # regorus defaults to Rego v1, as upstream Trustee
        limits=PolicyLimits(max_col=8192),  # kata raises regorus' length limits
        extensions={"query_reference_value": (1, fn)},  # Python builtins (name -> (nargs, fn))
        extensions_key="rv=data.reference",  # optional: fn depends only on this + modules + data
    )
    value = policy.evaluate("data.agent_policy.CreateContainerRequest", input_json=raw)
    if value is UNDEFINED: ...           # undefined is distinct from false and from null

Semantics:

- Input is JSON: a ``Mapping`` is serialised with ``json.dumps`` (a non-JSON value is a
  ``PolicyDenied``), or raw JSON text is passed as ``input_json`` (e.g. a verified token's
  payload), then ``set_input_json``; or ``input_value``, a value the caller built as JSON-compatible
  (str/int/float/bool/None/list/dict: the agent's serde dicts), handed to regorus' ``set_input``
  without a JSON round trip (same document: regorus converts it as it parses the JSON). Results
  are read back as JSON (``eval_rule_as_json``), so sets are lists, as OPA's JSON output.
- A rule path that the policy does not define (regorus: "not a valid rule path") or whose value is
  undefined returns ``UNDEFINED`` (upstream Trustee's broker treats both as "no claim").
- Parse errors raise ``EvidenceError(reason="rego.parse")`` with regorus' whole message (file,
  line, column, the source line and caret); evaluation errors (builtin errors, conflicting values,
  exceptions raised by an extension) raise ``PolicyDenied(reason="rego.error")``: fail closed.
- ``data`` may be replaced per query (``evaluate(..., data_json=...)``) for policies whose data
  changes per request (the KBS resource policy); otherwise it is added once.

Threads: a regorus ``Engine`` is *unsendable* (pyo3 panics if it is touched, or even dropped, on
another thread). Each thread therefore keeps its own parsed engines in a thread-local LRU keyed by
``RegoPolicy.key`` (a digest of modules, data, mode and limits); engines are created, evicted and
dropped on their own thread only. No lock is held while evaluating.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import regorus

from trustpod.errors import EvidenceError, PolicyDenied
from trustpod.rego.values import (
    UNDEFINED,
    Evaluation,
    PolicyLimits,
    error_summary,
    nesting_depth,
    rego_error_text,
)

__all__ = ["ENGINES_PER_THREAD", "RegoPolicy"]

#: Parsed engines each thread keeps (LRU over all policies; ~0.5 MB for default_cpu, 1.5 MB for
#: kata's rules.rego).
ENGINES_PER_THREAD = 8
_NO_RULE = "not a valid rule path"
_UNDEFINED_JSON = '"<undefined>"'
_instances = itertools.count()


_local = threading.local()


def _thread_engines() -> OrderedDict[str, list[Any]]:
    held: OrderedDict[str, list[Any]] | None = getattr(_local, "engines", None)
    if held is None:
        held = OrderedDict()
        _local.engines = held
    return held


class RegoPolicy:
    """Rego modules + data + options, parsed once per thread, evaluated per query."""

    def __init__(
        self,
        modules: Mapping[str, str] | str,
        *,
        data: Mapping[str, Any] | None = None,
        data_json: str | None = None,
        rego_v0: bool = False,
        limits: PolicyLimits | None = None,
        extensions: Mapping[str, tuple[int, Callable[..., Any]]] | None = None,
        extensions_key: str | None = None,
        gather_prints: bool = False,
    ) -> None:
        if isinstance(modules, str):
            modules = {"policy.rego": modules}
        if not modules:
            raise EvidenceError("no Rego module given", reason="rego.parse")
        if data is not None and data_json is not None:
            raise ValueError("pass data or data_json, not both")
        self.modules: dict[str, str] = dict(modules)
        self.limits = limits or PolicyLimits()
        for name, text in self.modules.items():
            depth = nesting_depth(text)
            if depth > self.limits.max_nesting:
                raise EvidenceError(
                    f"policy does not compile: {name}: brackets nest {depth} deep, over the "
                    f"limit of {self.limits.max_nesting}",
                    reason="rego.parse",
                    fix="name inner parts of the literal as rules (regorus' parse time grows "
                    "exponentially with nesting), or raise max_nesting",
                )
        self.rego_v0 = rego_v0
        self.gather_prints = gather_prints
        self._extensions = dict(extensions or {})
        try:
            self._data_json = json.dumps(data, separators=(",", ":")) if data is not None else None
        except (TypeError, ValueError) as exc:
            raise EvidenceError("policy data is not JSON", reason="rego.parse") from exc
        if data_json is not None:
            self._data_json = data_json
        h = hashlib.sha256()
        for name, text in sorted(self.modules.items()):
            for part in (name, text):
                raw = part.encode("utf-8", "surrogatepass")
                h.update(len(raw).to_bytes(8, "big") + raw)
        h.update(
            repr(
                (self._data_json, rego_v0, gather_prints, self.limits, sorted(self._extensions))
            ).encode()
        )
        if self._extensions:
            # Callables have no content digest: one engine set per instance, unless the caller
            # vouches that they are a function of `extensions_key` (+ modules and data).
            tag = f"key:{extensions_key}" if extensions_key is not None else f"#{next(_instances)}"
            h.update(tag.encode())
        #: Digest of everything the parsed engine depends on (the per-thread cache key).
        self.key = h.hexdigest()
        self._missing: set[str] = set()
        self._prepare()  # (1) parse now, on the caller's thread: errors surface at load time

    # -- engines ------------------------------------------------------------------------------
    # No exception may leave a frame that still references an engine (or this thread's engine
    # table): a traceback would keep it alive and the garbage collector could then drop it on
    # another thread (pyo3: "unsendable, but is being dropped on another thread"). Engine work
    # therefore returns error objects, raised by the public methods once the engine is gone.

    def _compile_error(self, exc: Exception) -> EvidenceError:
        msg = rego_error_text(exc)
        return EvidenceError(
            f"policy does not compile: {error_summary(msg)}\n{msg}",
            reason="rego.parse",
            fix="fix the Rego at the line shown (regorus is upstream's engine; "
            "`opa check` shows the same error)",
        )

    def _build(self) -> Any:
        """A new engine with modules and data loaded, or the ``EvidenceError`` (not raised)."""
        engine = regorus.Engine()
        lim = self.limits
        engine.set_policy_length_config(
            max_col=lim.max_col, max_file_bytes=lim.max_file_bytes, max_lines=lim.max_lines
        )
        if self.rego_v0:
            engine.set_rego_v0(True)
        if self.gather_prints:
            engine.set_gather_prints(True)
        for name, (nargs, fn) in self._extensions.items():
            engine.add_extension(name, nargs, fn)
        for name, text in self.modules.items():
            try:
                engine.add_policy(name, text)
            except (RuntimeError, UnicodeError) as exc:
                return self._compile_error(exc)
        if self._data_json is not None:
            try:
                engine.add_data_json(self._data_json)
            except (RuntimeError, UnicodeError) as exc:
                return EvidenceError(
                    f"policy data rejected: {rego_error_text(exc)}", reason="rego.parse"
                )
        return engine

    def _engine(self, data_json: str | None) -> Any:
        """This thread's engine holding exactly ``data_json`` (default: the policy's data), or
        the error (not raised)."""
        engines = _thread_engines()
        held = engines.get(self.key)
        if held is None:
            built = self._build()
            if isinstance(built, EvidenceError):
                return built
            held = [built, self._data_json]
            engines[self.key] = held
            while len(engines) > ENGINES_PER_THREAD:
                engines.popitem(last=False)
        else:
            engines.move_to_end(self.key)
        want = self._data_json if data_json is None else data_json
        if held[1] != want:
            held[1] = None
            held[0].clear_data()
            if want is not None:
                try:
                    held[0].add_data_json(want)
                except (RuntimeError, UnicodeError) as exc:
                    return PolicyDenied(
                        f"policy data is not JSON: {rego_error_text(exc)}", reason="rego.error"
                    )
            held[1] = want
        return held[0]

    def _prepare(self) -> None:
        got = self._engine(None)
        if isinstance(got, EvidenceError | PolicyDenied):
            raise got  # (an error object: this frame holds no engine)

    @property
    def packages(self) -> list[str]:
        """The packages the modules define (``data.<package>``)."""
        got = self._engine(None)
        if isinstance(got, EvidenceError | PolicyDenied):
            raise got
        return [str(p).removeprefix("data.") for p in got.get_packages()]

    # -- evaluation -----------------------------------------------------------------------------

    def _rule(self, engine: Any, path: str) -> Any:
        """The rule's value, ``UNDEFINED``, or a ``PolicyDenied`` (not raised)."""
        if path in self._missing:
            return UNDEFINED
        try:
            text = engine.eval_rule_as_json(path)
            if text == _UNDEFINED_JSON and engine.eval_rule(path) is None:
                return UNDEFINED  # (a rule whose value is the string "<undefined>" is kept)
        except (RuntimeError, UnicodeError) as exc:
            msg = rego_error_text(exc)
            if msg == _NO_RULE:
                self._missing.add(path)
                return UNDEFINED
            return PolicyDenied(
                f"policy evaluation of {path} failed: {error_summary(msg)}\n{msg}",
                reason="rego.error",
            )
        return json.loads(text)

    def _attempt(
        self,
        rules: tuple[str, ...] | list[str],
        input_json: str | None,
        data_json: str | None,
        input_value: Any = None,
    ) -> Evaluation | EvidenceError | PolicyDenied:
        engine = self._engine(data_json)
        if isinstance(engine, EvidenceError | PolicyDenied):
            return engine
        try:
            if input_json is None:
                engine.set_input(input_value)
            else:
                engine.set_input_json(input_json)
        except (RuntimeError, UnicodeError, TypeError, ValueError, OverflowError) as exc:
            return PolicyDenied(
                f"policy input is not JSON: {rego_error_text(exc)}", reason="rego.error"
            )
        values: dict[str, Any] = {}
        for rule in rules:
            value = self._rule(engine, rule)
            if isinstance(value, PolicyDenied):
                if self.gather_prints:
                    engine.take_prints()  # the prints of a failed evaluation go with it
                return value
            values[rule] = value
        prints = tuple(str(p) for p in engine.take_prints()) if self.gather_prints else ()
        return Evaluation(values, prints)

    def evaluate(
        self,
        rule: str,
        input: Mapping[str, Any] | None = None,
        *,
        input_json: str | None = None,
        data_json: str | None = None,
    ) -> Any:
        """The value of ``rule`` (full path ``data.<package>.<rule>``), or ``UNDEFINED``.

        ``data_json`` replaces the policy's data for this query only (a later query without it
        sees the policy's own data again).
        """
        return self.evaluate_many((rule,), input, input_json=input_json, data_json=data_json)[rule]

    def evaluate_many(
        self,
        rules: tuple[str, ...] | list[str],
        input: Mapping[str, Any] | None = None,
        *,
        input_json: str | None = None,
        data_json: str | None = None,
    ) -> dict[str, Any]:
        """Several rules over one input (set once); undefined rules map to ``UNDEFINED``."""
        return self.run(rules, input, input_json=input_json, data_json=data_json).values

    def run(
        self,
        rules: tuple[str, ...] | list[str],
        input: Mapping[str, Any] | None = None,
        *,
        input_json: str | None = None,
        data_json: str | None = None,
        input_value: Any = None,
    ) -> Evaluation:
        """``evaluate_many`` plus the ``print()`` output (with ``gather_prints=True``; the prints
        of a failed evaluation are discarded with it). ``input_value``: see the module doc."""
        if input_value is not None:
            if input is not None or input_json is not None:
                raise ValueError("pass one of input, input_json and input_value")
        elif input_json is None:
            try:
                input_json = json.dumps(
                    {} if input is None else input, separators=(",", ":"), allow_nan=False
                )
            except (TypeError, ValueError, RecursionError):
                raise PolicyDenied("policy input is not JSON", reason="rego.error") from None
        got = self._attempt(rules, input_json, data_json, input_value)
        if isinstance(got, Evaluation):
            return got
        raise got
