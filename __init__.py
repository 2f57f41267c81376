"""Not part of the package. Python runs this file only when it imports this source folder itself:
a script that runs in the folder that holds a clone named ``dsa_fast`` and imports ``dsa_fast``
finds the clone's root folder first. Without this file that import would give an empty namespace
package (``AttributeError: module 'dsa_fast' has no attribute 'DiffAugment'``); with it, the package
in the ``dsa_fast/`` folder inside is loaded in its place, as any other script would import it.
"""
import importlib.util
import os
import sys

# Under another name (a tool that imports every __init__.py, e.g. pytest collecting the folder) there
# is nothing to hand over.
if __name__ == "dsa_fast":
    _package = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dsa_fast")
    _spec = importlib.util.spec_from_file_location(__name__, os.path.join(_package, "__init__.py"),
                                                   submodule_search_locations=[_package])
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[__name__] = _module  # what `import dsa_fast` returns once this file has run
    _spec.loader.exec_module(_module)
