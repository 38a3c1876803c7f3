import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SDK_DIR = os.path.dirname(HERE)
EXAMPLE = os.path.join(SDK_DIR, "examples", "hello.py")
PYTHON = sys.executable
