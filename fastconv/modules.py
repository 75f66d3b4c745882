"""Drop-in modules: torch.nn.Conv2d / MaxPool2d subclasses with the same constructor, attributes and
state_dict, whose forward runs fastconv's kernels."""
import torch
from torch.nn.modules.utils import _pair

from .functional import conv2d, max_pool2d

__all__ = ["Conv2d", "MaxPool2d"]

# torch.fx.symbolic_trace records calls of these as graph nodes, as it does torch.nn.functional's, instead of
# tracing into their argument checks (which a Proxy does not pass): converted models trace as torch.nn ones do.
torch.fx.wrap("conv2d")
torch.fx.wrap("max_pool2d")


class Conv2d(torch.nn.Conv2d):
    """torch.nn.Conv2d on fastconv kernels. Non-zero padding modes pad with torch.nn.functional.pad first,
    exactly as torch.nn.Conv2d does."""

    def _conv_forward(self, input, weight, bias):
        if self.padding_mode != "zeros":
            input = torch.nn.functional.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return conv2d(input, weight, bias, self.stride, _pair(0), self.dilation, self.groups)
        return conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class MaxPool2d(torch.nn.MaxPool2d):
    """torch.nn.MaxPool2d on fastconv kernels."""

    def forward(self, input):
        return max_pool2d(
            input, self.kernel_size, self.stride, self.padding, self.dilation,
            ceil_mode=self.ceil_mode, return_indices=self.return_indices,
        )
