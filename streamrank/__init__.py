"""streamrank: streaming, online-learning ranking for e-commerce search and recommendation."""

__version__ = "0.1.0"
