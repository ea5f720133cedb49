"""The job's inputs: images and ground-truth masks, found, checked up front, decoded one at a time."""
