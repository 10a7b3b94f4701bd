module ambient.test/h2app

go 1.24
