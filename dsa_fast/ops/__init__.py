"""One module per op family, each defining its ops' records (``spec.OpSpec``). The canonical order
and the layout derived from it are ``dsa_fast.ops_table``."""
