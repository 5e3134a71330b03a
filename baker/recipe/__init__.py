"""The input side of a build: a recipe read into the one frozen Spec every step reads.

- load: render (jinja2), parse (YAML), validate into the Spec, pin the files it names
- spec: the Spec and the recipe's typed fields
- render, bounded: the render and the YAML read within bounds (a recipe is untrusted input)
- messages: a refused recipe said as one `FILE:LINE: field: message.` sentence
- lock: the package lock's format (resolving one is baker.image.apt's)
"""

from baker.recipe.load import load, parse_var, parse_vars, project_root
from baker.recipe.spec import Spec

__all__ = ["Spec", "load", "parse_var", "parse_vars", "project_root"]
