module ambient.test/goclient

go 1.24
