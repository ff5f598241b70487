"""``Record``: value semantics for the runtime's small immutable classes.

The bootstrap starts before every task, and ``dataclasses`` alone costs it ~10 ms of imports
(inspect, ast, dis...), ``typing`` a few more: the classes it uses are plain ``__slots__``
classes with a typed ``__init__`` and ``Final`` attributes (read-only for mypy), not
``@dataclass(frozen=True)``, and its modules set ``TYPE_CHECKING = False`` themselves (mypy and
ruff treat the name as typing's). Deriving from ``Record`` gives these classes what the
dataclass gave: ``==``, ``hash``, a repr and :meth:`to_dict`, from the slots in order.
"""

from __future__ import annotations


class Record:
    __slots__: tuple[str, ...] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record) or type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def to_dict(self) -> dict[str, object]:
        """The slots by name (values as they are: a nested Record stays a Record)."""
        return {name: getattr(self, name) for name in self.__slots__}

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self.to_dict().items())
        return f"{type(self).__qualname__}({fields})"
