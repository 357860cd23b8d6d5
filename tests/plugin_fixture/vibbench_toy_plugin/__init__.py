"""A tiny vibbench plug-in used by the tests: a model, a method and a module that fails on import."""
