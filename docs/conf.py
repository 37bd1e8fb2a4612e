"""Sphinx configuration for the hessop documentation."""

import hessop

project = "hessop"
author = "The hessop developers"
copyright = "2026, The hessop developers"
release = hessop.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
]

autosummary_generate = True
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "description"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False

# Intersphinx needs the network; the build stays offline, so references to
# other projects' objects render as plain text.
intersphinx_mapping = {}
nitpicky = False

html_theme = "furo"
html_title = f"hessop {release}"
html_static_path = ["_static"]
exclude_patterns = ["_build"]
