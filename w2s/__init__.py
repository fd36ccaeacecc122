"""The `w2s` command. The toolkit itself lives in the stage packages: data, train, guide, eval."""

__version__ = "0.1.0"
