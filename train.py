"""Fine-tune for extractive QA: python train.py --epochs 3 --lr 2e-5 (see --help).

Multi-GPU: torchrun --nproc_per_node N train.py ...
"""

from qa.commands.train import main

if __name__ == "__main__":
    main()
