"""Answer a question: python predict.py --question Q --context C (see --help)."""

from qa.commands.predict import main

if __name__ == "__main__":
    main()
