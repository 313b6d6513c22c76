"""The Redis scripts (`*.lua`), shipped inside the package as `gateway.lua`.

They live here, at the top of the repository, to be read and reviewed as Lua; pyproject.toml maps
this folder to the package `gateway.lua`, so a wheel carries them and `gateway/store.py` loads
them with `importlib.resources`, wherever the package is installed.
"""
