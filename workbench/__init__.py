"""workbench: find the cheapest way to run Stable Diffusion without losing image quality."""
__version__ = "0.1.0"
