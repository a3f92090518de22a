module cvmtest

go 1.19
