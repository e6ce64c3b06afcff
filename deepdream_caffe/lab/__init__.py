"""Tools that prove and measure the product: benchmarks, goldens, bundles, notebook checks.

The core (everything outside this folder but the CLI's dispatch) never imports from here.
"""
