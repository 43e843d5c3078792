pytest_plugins = ["cytocompare.testing.pytest_plugin"]
