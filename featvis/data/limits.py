"""Input limits that the config schema and the image reader share (no heavy imports: sweep plans read the schema).

`max_image_pixels` refuses an image or mask whose header says it is larger, before any
pixel is decoded (featvis.data.images). Its default is PIL's own decompression-bomb limit,
Image.MAX_IMAGE_PIXELS (0x5555555 = 89,478,485 pixels: a 24-bit image of 256 MiB, about
9459x9459): a limit users of PIL already know, which photographs and Cityscapes-size
frames (2 Mpx) are far under, and 13000x13000 (169 Mpx, which drew with 10.2 GB of memory) is
over. It can be raised to OpenCV's decoder's own limit, above which cv2.imread refuses.
"""

DEFAULT_MAX_PIXELS = 89_478_485  # PIL's Image.MAX_IMAGE_PIXELS
DECODER_MAX_PIXELS = 1 << 30  # OpenCV's CV_IO_MAX_IMAGE_PIXELS: imread gives up above it
