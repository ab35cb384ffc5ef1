"""``python -m bot`` is ``optobot``."""
from bot.cli import main

if __name__ == "__main__":  # not again in the render workers, which import the main module
    main()
