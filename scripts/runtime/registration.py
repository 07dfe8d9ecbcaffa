"""How the runtime's components register with spaCy, from either of the two copies of this code a process may load.

The project registers the components through its spacy_factories entry points (scripts.runtime),
and the wheel ships a copy of the same modules (en_bert_ner.*). Where the project and the wheel are
installed together, the second copy to load finds each factory taken, which spaCy refuses for a
function from another file (E004): as the code is the same, it leaves the first. What a process
should do once, whichever copy comes first (fork handlers, srsly's encoder for BatchPlace), is
done by the copy that registers the encoder_backend factory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from spacy.language import Language

from .backends import FACTORY


def first_copy_in_process() -> bool:
    """True until some copy of the runtime has registered the encoder_backend factory in this process."""
    return not Language.has_factory(FACTORY)


def register_factory(
    name: str, default_config: dict[str, Any], assigns: Iterable[str] = (), requires: Iterable[str] = ()
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`@Language.factory`, declaring what the component assigns and requires, unless another copy registered it."""

    def register(function: Callable[..., Any]) -> Callable[..., Any]:
        if Language.has_factory(name):
            return function
        return Language.factory(name, default_config=default_config, assigns=list(assigns), requires=list(requires))(
            function
        )

    return register
